"""Data: sources (name -> examples), host tf.data pipeline, on-device augmentation."""
