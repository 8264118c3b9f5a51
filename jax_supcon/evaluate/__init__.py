"""Evaluation without training: kNN classification, retrieval and clustering metrics, embeddings."""
