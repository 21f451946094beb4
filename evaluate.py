"""Evaluation binary: `python evaluate.py --model_dir=runs/demo --protocol=knn|linear|finetune`."""

if __name__ == "__main__":  # Ctrl-C while the program loads ends in one line (byol_tf.programs)
    from byol_tf import programs

    programs.start("evaluate", "evaluate.py")
else:
    from byol_tf.cli.evaluate import FLAGS, evaluate, main, run  # noqa: F401
