"""BYOL pretraining binary: `python train.py --flagfile=configs/cifar10.flags`.

With no flags it runs the offline demo (Fashion-MNIST subset shipped in the package).
"""

import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from byol_tf import config  # noqa: E402

config.define_flags()
FLAGS = flags.FLAGS


def main(argv):
    """Parses the flags into a TrainConfig, trains, and prints the results."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    import tensorflow as tf

    from byol_tf import training

    try:
        cfg = config.from_flags(FLAGS)
        summary = training.train(cfg, flags_text=config.flags_text())
    except (ValueError, FileNotFoundError, training.TrainingError) as error:
        sys.exit(f"train.py: error: {error}")
    except tf.errors.InvalidArgumentError as error:
        _exit_if_unreadable_image(error)
        raise
    if "interrupted" in summary:
        print(
            f"Stopped by {summary['interrupted']} at step {summary['steps']}; checkpoint "
            f"{summary['checkpoint']}. Run the same command again to resume."
        )
        return 128 + signal.Signals[summary["interrupted"]].value
    _report(summary)
    return 0


def _exit_if_unreadable_image(error):
    """A corrupt image file met by the input pipeline: one line naming it, no traceback."""
    from byol_tf import sources

    path = sources.unreadable_file(error)
    if path:
        sys.exit(
            f"train.py: error: Cannot decode image file {path} (corrupt or unsupported); "
            "remove it or pass --skip_corrupt to skip such files."
        )


def _report(summary):
    print(
        f"Finished {summary['steps']} steps in {summary['wall_time_s']:.0f} s; "
        f"checkpoint: {summary['checkpoint']}"
    )
    if "knn_top1" in summary:
        line = f"kNN top-1 ({summary['knn_protocol']}): trained {summary['knn_top1']:.2%}"
        if "knn_top1_random_init" in summary:
            line += f" vs random init {summary['knn_top1_random_init']:.2%}"
        print(line)
    if "export" in summary:
        print(f"Exported encoder (SavedModel for TF Serving): {summary['export']}")


if __name__ == "__main__":
    app.run(main, flags_parser=config.flags_parser("train.py"))
