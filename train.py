"""BYOL pretraining binary: `python train.py --flagfile=configs/cifar10.flags` (byol_tf.cli.train).

With no flags it runs the offline demo (Fashion-MNIST subset shipped in the package).
"""

if __name__ == "__main__":  # Ctrl-C while the program loads ends in one line (byol_tf.cli.programs)
    try:
        from byol_tf.cli import programs
    except KeyboardInterrupt:  # Ctrl-C before byol_tf.cli.programs could catch it: the same line
        import sys

        print("train.py: interrupted (Ctrl-C).", file=sys.stderr)
        raise SystemExit(130) from None
    programs.start("train", "train.py")
else:
    from byol_tf.cli.train import FLAGS, main, run  # noqa: F401
