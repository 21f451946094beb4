"""BYOL pretraining, `byol-train --flagfile=configs/cifar10.flags`; no flags: the offline demo."""

import signal
from typing import NoReturn

from byol_tf.cli import flag_definitions, runner
from byol_tf.settings import train_config

flag_definitions.define_flags(train_config.TrainConfig)
FLAGS = flag_definitions.FLAGS


def main(argv) -> int:
    """Parses the flags into a `TrainConfig`, trains, and prints the results.

    Ctrl-C or SIGTERM while training: the step finishes, a checkpoint is written and the
    program stops; Ctrl-C at any other moment, or a second one, stops at once (an interrupted
    checkpoint write removes its temporary file), and so does SIGTERM when the program runs
    from `byol_tf.cli.programs` (status 143). Each ends with one line, never a traceback, and
    releases `model_dir`'s lock.

    Returns:
        The exit status: 0, or 128 + the number of the signal that stopped training.
    """
    runner.check_no_arguments(argv)
    import tensorflow as tf

    from byol_tf.runs import run_folder
    from byol_tf.training import train_run

    try:
        cfg = flag_definitions.from_flags(FLAGS)
        summary = train_run.train(cfg, flags_text=flag_definitions.flags_text())
    except (ValueError, FileNotFoundError, train_run.TrainingError, run_folder.WriteError) as error:
        runner.fail(argv, error)
    except KeyboardInterrupt:  # Ctrl-C before training started, or a second one
        runner.interrupted(argv, f"; run the same command again to resume in {FLAGS.model_dir}")
    except tf.errors.InvalidArgumentError as error:
        runner.exit_if_unreadable_image(
            argv,
            error,
            " (corrupt or unsupported); remove it or pass --skip_corrupt to skip such files.",
        )
        raise
    if "interrupted" in summary:
        print(
            f"Stopped by {summary['interrupted']} at step {summary['steps']}; checkpoint "
            f"{summary['checkpoint']}. Run the same command again to resume."
        )
        return 128 + signal.Signals[summary["interrupted"]].value
    _report(summary)
    return 0


def _report(summary):
    print(
        f"Finished {summary['steps']} steps in {summary['wall_time_s']:.0f} s; "
        f"checkpoint: {summary['checkpoint']}"
    )
    if "knn_top1" in summary:
        print(f"kNN top-1 ({summary['knn_protocol']}):")
        for key, name in (
            ("knn_top1_raw_pixels_unit", "raw pixels in [0, 1]"),
            ("knn_top1_raw_pixels", "raw pixels, normalised"),
            ("knn_top1_random_init", "random-initialisation encoder"),
            ("knn_top1", "trained encoder"),
        ):
            if key in summary:
                print(f"  {name:<30} {summary[key]:6.2%}")
    if "export" in summary:
        print(f"Exported encoder (SavedModel for TF Serving): {summary['export']}")


def run(program="byol-train") -> NoReturn:
    """The `byol-train` console script; `python train.py` runs it as `train.py`."""
    runner.run(main, program, train_config.TrainConfig)
