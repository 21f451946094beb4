"""Evaluation protocols: feature extraction, kNN, the linear probes (fast and the paper's) and
semi-supervised fine-tuning."""

from byol_tf.evaluation.features import extract_features, subset_by_fraction
from byol_tf.evaluation.finetune import finetune
from byol_tf.evaluation.knn import knn_classify
from byol_tf.evaluation.linear import DEFAULT_L2, DEFAULT_LEARNING_RATES, linear_eval
from byol_tf.evaluation.linear_official import (
    LINEAR_OFFICIAL_LEARNING_RATES,
    linear_eval_official,
)

__all__ = [
    "DEFAULT_L2",
    "DEFAULT_LEARNING_RATES",
    "LINEAR_OFFICIAL_LEARNING_RATES",
    "extract_features",
    "finetune",
    "knn_classify",
    "linear_eval",
    "linear_eval_official",
    "subset_by_fraction",
]
