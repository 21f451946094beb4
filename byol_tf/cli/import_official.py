"""Import of an official BYOL checkpoint: `byol-import --checkpoint=pretrain_res50x1.pkl ...`.

Writes a byol_tf run folder (`--model_dir`, for evaluate.py and train.py --init_from) and/or a
SavedModel for TF Serving (`--export_dir`) from DeepMind's published Haiku weights, without
running any code from the file.
"""

from byol_tf import cli, config, program_settings

config.define_flags(program_settings.ImportConfig)


def main(argv):
    """Imports the checkpoint the flags name and prints where its parts went."""
    cli.check_no_arguments(argv)
    from byol_tf import official, run_dir

    try:
        f = config.from_flags(config_class=program_settings.ImportConfig)
        official.import_checkpoint(
            f.checkpoint, f.model_dir, f.export_dir, f.image_size, f.dataset,
            manual_dir=f.manual_dir,
        )  # fmt: skip
    except (ValueError, run_dir.WriteError) as error:
        cli.fail(argv, error)
    return 0


def run(program="byol-import"):
    """The `byol-import` console script (`python -m byol_tf.cli.import_official` too)."""
    cli.run(main, program, program_settings.ImportConfig)


if __name__ == "__main__":
    run("python -m byol_tf.cli.import_official")
