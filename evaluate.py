"""Evaluation binary: `python evaluate.py --model_dir=runs/demo --protocol=knn|linear|finetune`."""

if __name__ == "__main__":  # Ctrl-C while the program loads ends in one line (byol_tf.cli.programs)
    try:
        from byol_tf.cli import programs
    except KeyboardInterrupt:  # Ctrl-C before byol_tf.cli.programs could catch it: the same line
        import sys

        print("evaluate.py: interrupted (Ctrl-C).", file=sys.stderr)
        raise SystemExit(130) from None
    programs.start("evaluate", "evaluate.py")
else:
    from byol_tf.cli.evaluate import FLAGS, main, run  # noqa: F401
    from byol_tf.evaluation.evaluate_run import evaluate  # noqa: F401
