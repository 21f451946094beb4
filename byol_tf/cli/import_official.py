"""Import of an official BYOL checkpoint: `byol-import --checkpoint=pretrain_res50x1.pkl ...`.

Writes a byol_tf run folder (`--model_dir`, for evaluate.py and train.py --init_from) and/or a
SavedModel for TF Serving (`--export_dir`) from DeepMind's published Haiku weights, without
running any code from the file. An import that fails or is interrupted (Ctrl-C, SIGTERM)
removes what it wrote, so the same command can run again.
"""

import contextlib
import os
import shutil
import signal

from byol_tf.cli import flag_definitions, runner
from byol_tf.settings import program_configs

flag_definitions.define_flags(program_configs.ImportConfig)


def _check_dataset(name):
    """Refuses a `--dataset` that is not 'demo', a folder or a tensorflow-datasets name."""
    from byol_tf.data import sources

    if name == "demo" or sources.is_folder_name(name):
        return
    import tensorflow_datasets as tfds  # imported lazily: it is slow to import

    try:
        tfds.builder_cls(name.split(":")[0].split("/")[0])  # the name without config, version
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(
            f"--dataset={name} is not 'demo', an existing folder or a tensorflow-datasets name "
            "(the data set the checkpoint was pretrained on; imagenet2012 for the official ones)"
        ) from None


@contextlib.contextmanager
def _removed_on_failure(folders):
    """Removes what the block wrote in `folders` if it fails or is interrupted.

    A folder the block created goes whole; in one that existed, the entries it added go and
    those that were there stay.
    """
    before = {path: set(os.listdir(path)) if os.path.isdir(path) else None for path in folders}
    try:
        yield
    except BaseException:  # an error, Ctrl-C (KeyboardInterrupt) or SIGTERM (SystemExit)
        with contextlib.suppress(ValueError):  # the program ends now: a second Ctrl-C waits
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        for path, entries in before.items():
            if entries is None:
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.isdir(path):
                for name in set(os.listdir(path)) - entries:
                    added = os.path.join(path, name)
                    if os.path.isdir(added) and not os.path.islink(added):
                        shutil.rmtree(added, ignore_errors=True)
                    else:
                        with contextlib.suppress(OSError):
                            os.remove(added)
        raise


def main(argv) -> int:
    """Imports the checkpoint the flags name and prints where its parts went."""
    runner.check_no_arguments(argv)
    from byol_tf.official import importer
    from byol_tf.runs import run_folder

    try:
        f = flag_definitions.from_flags(config_class=program_configs.ImportConfig)
        if "dataset" in f.explicit:
            _check_dataset(f.dataset)
        with _removed_on_failure([path for path in (f.model_dir, f.export_dir) if path]):
            importer.import_checkpoint(
                f.checkpoint, f.model_dir, f.export_dir, f.image_size, f.dataset,
                manual_dir=f.manual_dir,
            )  # fmt: skip
    except (ValueError, run_folder.WriteError) as error:
        runner.fail(argv, error)
    return 0


def run(program="byol-import") -> None:
    """The `byol-import` console script (`python -m byol_tf.cli.import_official` too)."""
    runner.run(main, program, program_configs.ImportConfig)


if __name__ == "__main__":
    from byol_tf.cli import programs

    programs.end_on_sigterm("python -m byol_tf.cli.import_official")  # as the console script
    run("python -m byol_tf.cli.import_official")
