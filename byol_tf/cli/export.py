"""Export of a run's checkpoint for TF Serving: `byol-export --model_dir=... --export_dir=...`."""

import functools
import sys

from byol_tf import cli, config, program_settings

config.define_flags(program_settings.ExportConfig)


def main(argv):
    """Exports the checkpoint the flags name and prints where the SavedModel went."""
    cli.check_no_arguments(argv)
    from byol_tf import export, run_dir

    try:
        f = config.from_flags(config_class=program_settings.ExportConfig)
        note = functools.partial(print, file=sys.stderr)  # a damaged checkpoint skipped
        path = export.export_checkpoint(
            f.model_dir, f.export_dir, f.checkpoint, f.version, f.mean, f.std, log=note
        )
    except (ValueError, run_dir.WriteError) as error:
        cli.fail(argv, error)
    print(f"Exported SavedModel to {path}")
    return 0


def run(program="byol-export"):
    """The `byol-export` console script; `python -m byol_tf.export` runs it under that name."""
    cli.run(main, program, program_settings.ExportConfig)
