"""Export of a run's checkpoint for TF Serving: `byol-export --model_dir=... --export_dir=...`."""

import functools
import sys
from typing import NoReturn

from byol_tf.cli import flag_definitions, runner
from byol_tf.settings import program_configs

flag_definitions.define_flags(program_configs.ExportConfig)


def main(argv) -> int:
    """Exports the checkpoint the flags name and prints where the SavedModel went."""
    runner.check_no_arguments(argv)
    from byol_tf.runs import run_folder
    from byol_tf.serving import export

    try:
        f = flag_definitions.from_flags(config_class=program_configs.ExportConfig)
        note = functools.partial(print, file=sys.stderr)  # a damaged checkpoint skipped
        path = export.export_checkpoint(
            f.model_dir, f.export_dir, f.checkpoint, f.version, f.mean, f.std, log=note
        )
    except (ValueError, run_folder.WriteError) as error:
        runner.fail(argv, error)
    print(f"Exported SavedModel to {path}")
    return 0


def run(program="byol-export") -> NoReturn:
    """The `byol-export` console script; `python -m byol_tf.cli.export` runs it under that name."""
    runner.run(main, program, program_configs.ExportConfig)


if __name__ == "__main__":
    from byol_tf.cli import programs

    programs.end_on_sigterm("python -m byol_tf.cli.export")  # as the console script
    run("python -m byol_tf.cli.export")
