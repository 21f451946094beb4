"""Evaluation of a pretrained encoder: feature extraction, weighted kNN, the linear probes (fast
and the paper's, appendix C.1), semi-supervised fine-tuning, and a whole evaluation from an
`EvalConfig` (`evaluate_run.evaluate`, what `byol-evaluate` runs).

May import `settings`, `views`, `core`, `data`, `runs` and `serving` (the encoder to evaluate
comes from a run's checkpoint or an export).
"""

from byol_tf import submodules_on_first_use
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

__getattr__ = submodules_on_first_use(__name__)
