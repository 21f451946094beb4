"""Evaluation binary: `python evaluate.py --model_dir=runs/demo --protocol=knn|linear|finetune`."""

from byol_tf.cli.evaluate import FLAGS, evaluate, main, run  # noqa: F401

if __name__ == "__main__":
    run("evaluate.py")
