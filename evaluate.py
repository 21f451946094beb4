"""Evaluation binary: `python evaluate.py --model_dir=runs/demo --protocol=knn|linear|finetune`."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before byol_tf imports TensorFlow

from byol_tf.cli.evaluate import FLAGS, evaluate, main, run  # noqa: E402, F401

if __name__ == "__main__":
    run("evaluate.py")
