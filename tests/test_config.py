"""Flags → TrainConfig: defaults, recipes and one-line errors naming the flag."""

import dataclasses
import os
import re

import pytest
from absl import flags
from absl.testing import flagsaver

from byol_tf.cli import flag_definitions
from byol_tf.settings import fields, program_configs, train_config

FLAGS = flags.FLAGS
flag_definitions.define_flags()
FLAGS.mark_as_parsed()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_defaults_are_the_offline_demo():
    with flagsaver.flagsaver():
        cfg = flag_definitions.from_flags(FLAGS)
    with flagsaver.flagsaver():
        FLAGS(["train.py", f"--flagfile={os.path.join(ROOT, 'configs', 'demo.flags')}"])
        demo = flag_definitions.from_flags(FLAGS)
    assert cfg.dataset == "demo" and cfg.depth == 18 and not cfg.cifar_stem
    assert cfg.augment_overrides() == {
        "crop_area": (0.5, 1.0),
        "jitter_prob": 0.3,
        "view2_solarize_prob": 0.0,
    }
    assert cfg.recipe == "auto" and cfg.learning_rate is None  # the recipe decides
    # demo.flags spells the defaults out; its additions are the export folder and a kNN
    # monitor every 5 epochs with 25 labelled images per class.
    assert demo.knn_every_epochs == 5 and demo.knn_labels_per_class == 25
    added = dict(export_dir=None, preset=None, knn_every_epochs=1, knn_labels_per_class=0)
    assert dataclasses.replace(demo, **added) == cfg


@pytest.mark.parametrize("name", ["imagenet", "cifar10", "stl10"])
def test_recipes_do_not_inherit_the_demo_augmentation(name):
    with flagsaver.flagsaver():
        FLAGS(["train.py", f"--flagfile={os.path.join(ROOT, 'configs', f'{name}.flags')}"])
        cfg = flag_definitions.from_flags(FLAGS)
    assert cfg.augment == () and cfg.augment_overrides() == {}


@pytest.mark.parametrize("name", ["imagenet", "cifar10", "stl10", "demo"])
def test_every_recipe_parses_into_a_valid_config(name):
    path = os.path.join(ROOT, "configs", f"{name}.flags")
    with flagsaver.flagsaver():
        FLAGS(["train.py", f"--flagfile={path}"])
        cfg = flag_definitions.from_flags(FLAGS)
    assert cfg.model_dir.endswith(name)


def test_imagenet_recipe_is_the_official_300_epoch_preset():
    with flagsaver.flagsaver():
        FLAGS(["train.py", f"--flagfile={os.path.join(ROOT, 'configs', 'imagenet.flags')}"])
        cfg = flag_definitions.from_flags(FLAGS)
    assert (cfg.dataset, cfg.encoder, cfg.batch_size, cfg.epochs) == (
        "imagenet2012",
        "resnet50",
        4096,
        300,
    )
    # configs/byol.py of the official code: 300 epochs -> lr 0.3, wd 1e-6, tau 0.99 (0.2,
    # 1.5e-6 and 0.996 are its 1000-epoch values), chosen by --recipe=paper, not the flagfile.
    from byol_tf.training import recipes

    cfg, _ = recipes.resolve_recipe(cfg, 300 * 312, 312, 1_281_167)
    assert (cfg.learning_rate, cfg.weight_decay, cfg.eta, cfg.base_tau) == (
        0.3,
        1e-6,
        1e-3,
        0.99,
    )
    assert (cfg.warmup_epochs, cfg.image_size, cfg.cifar_stem) == (10, 224, False)


def test_later_flags_override_the_flagfile():
    with flagsaver.flagsaver():
        path = os.path.join(ROOT, "configs", "cifar10.flags")
        FLAGS(["train.py", f"--flagfile={path}", "--epochs=3"])
        assert flag_definitions.from_flags(FLAGS).epochs == 3


@pytest.mark.parametrize(
    "flag, value, match",
    [
        ("batch_size", 0, "--batch_size must be a positive int"),
        ("batch_size", -8, "--batch_size"),
        ("epochs", 0, "--epochs must be a positive int"),
        ("encoder", "vgg16", "--encoder must be one of resnet18"),
        ("image_size", 0, "--image_size"),
        ("base_tau", 1.5, "--base_tau"),
        ("learning_rate", 0.0, "--learning_rate"),
    ],
)
def test_invalid_values_name_the_flag(flag, value, match):
    with flagsaver.flagsaver(**{flag: value}):
        with pytest.raises(ValueError, match=match) as info:
            flag_definitions.from_flags(FLAGS)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "field, value", [("optimizer", "sgd"), ("lr_schedule", "step"), ("tau_schedule", "linear")]
)
def test_unknown_optimizer_or_schedule_names_the_flag(field, value):
    with pytest.raises(ValueError, match=f"--{field} must be one of") as info:
        train_config.TrainConfig(**{field: value})
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "entries, match",
    [
        (["crop_area=1.5:1.0"], "--augment: Augmentation option crop_area must be a range"),
        (["view2_solarize_prob=2"], "--augment: Augmentation option solarize_prob"),
        (["blur=0.5"], "--augment: Unknown augmentation option 'blur'"),
    ],
)
def test_out_of_range_augment_entries_fail_when_the_config_is_built(entries, match):
    with pytest.raises(ValueError, match=match) as info:
        train_config.TrainConfig(augment=tuple(entries))
    assert "\n" not in str(info.value)


def test_parse_augment_reads_numbers_and_ranges_and_names_the_given_flag():
    assert train_config.parse_augment([" jitter_prob=0.3", "crop_area=0.2:1"]) == {
        "jitter_prob": 0.3,
        "crop_area": (0.2, 1.0),
    }
    for entry in ["jitter_prob", "=0.3", "jitter_prob=high"]:
        with pytest.raises(ValueError, match=r"--tf_augment entries must look like") as info:
            train_config.parse_augment([entry], flag="--tf_augment")
        assert info.value.args[0].endswith(f"Received: --tf_augment={entry}")
    assert train_config.checked_augment(["view2_solarize_prob=0"]) == {"view2_solarize_prob": 0.0}
    with pytest.raises(ValueError, match=r"^--tf_augment: Augmentation option jitter_prob"):
        train_config.checked_augment(["jitter_prob=2"], "small", flag="--tf_augment")


@pytest.mark.parametrize(
    "flag, value, expected",
    [
        ("knn_k", 0, "a positive int"),
        ("knn_k", -1, "a positive int"),
        ("knn_max_examples", 0, "a positive int"),
        ("knn_every_epochs", -1, "an int >= 0"),
        ("checkpoint_every_steps", -1, "an int >= 0"),
        ("collapse_threshold", -1.0, "in [0, 1]"),
        ("collapse_patience", 0, "a positive int"),
        ("projection_dim", 0, "a positive int"),
        ("hidden_dim", -1, "a positive int"),
        ("seed", -1, "an int in [0, 2**32 - 1]"),
        ("image_size", 100_000, "a positive int <= 4096"),
        ("learning_rate", float("inf"), "positive and finite"),
    ],
)
def test_each_range_is_checked_when_the_settings_are_built(flag, value, expected):
    with flagsaver.flagsaver(**{flag: value}):
        with pytest.raises(ValueError) as info:
            flag_definitions.from_flags(FLAGS)
    assert str(info.value) == f"--{flag} must be {expected}. Received: --{flag}={value}"


def test_zero_turns_the_checkpoint_interval_and_the_knn_monitor_off():
    cfg = train_config.TrainConfig(checkpoint_every_steps=0, knn_every_epochs=0, image_size=4096)
    assert (cfg.checkpoint_every_steps, cfg.knn_every_epochs) == (0, 0)


@pytest.mark.parametrize(
    "config_class, kwargs, message",
    [
        (program_configs.EvalConfig, dict(batch_size=0), "--batch_size must be a positive int"),
        (
            program_configs.ExportConfig,
            dict(model_dir="run", export_dir="out", version=-1),
            "--version must be a positive int. Received: --version=-1",
        ),
        (
            program_configs.ExportConfig,
            dict(model_dir="run", export_dir="out", std=("0.5", "0")),
            "--std must be positive (each channel). Received: --std=0.5,0.0",
        ),
        (
            program_configs.ImportConfig,
            dict(checkpoint="a.pkl", model_dir="run", image_size=5000),
            "--image_size must be a positive int <= 4096",
        ),
    ],
)
def test_other_programs_check_their_ranges_too(config_class, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        config_class(**kwargs)


def test_tpu_strategy_needs_a_tpu_address():
    with flagsaver.flagsaver(strategy="tpu"):
        with pytest.raises(ValueError, match="--tpu"):
            flag_definitions.from_flags(FLAGS)


@pytest.mark.parametrize(
    "config_class",
    [train_config.TrainConfig, program_configs.EvalConfig, program_configs.ExportConfig],
)
def test_every_setting_is_a_flag_with_help_and_its_default(config_class):
    flag_definitions.define_flags(config_class)
    flags = fields.flag_fields(config_class)
    assert len(flags) == len(dataclasses.fields(config_class)) - 1  # all but `explicit`
    for field in flags:
        flag = FLAGS[field.name]
        assert flag.help and "\n" not in flag.help, field.name
        if field.metadata["choices"]:
            assert tuple(flag.parser.enum_values) == field.metadata["choices"]
        if config_class is train_config.TrainConfig:
            default = list(field.default) if isinstance(field.default, tuple) else field.default
            assert flag.default == default, field.name


def test_from_flags_records_the_flags_that_were_set():
    path = os.path.join(ROOT, "configs", "cifar10.flags")
    with flagsaver.flagsaver():
        FLAGS(["train.py", f"--flagfile={path}", "--epochs=3", "--model_dir=~/run"])
        cfg = flag_definitions.from_flags(FLAGS)
    assert {"dataset", "epochs", "augment", "model_dir"} <= set(cfg.explicit)
    assert "seed" not in cfg.explicit and "explicit" not in cfg.to_json()
    assert cfg.model_dir == os.path.expanduser("~/run") and cfg.augment == ()
    with flagsaver.flagsaver():
        assert flag_definitions.from_flags(FLAGS).explicit == ()


def test_preset_names_are_those_of_the_augment_module():
    from byol_tf.views import augment

    assert set(train_config.PRESETS) == set(augment.PRESETS)


@pytest.mark.parametrize("argv", [["--help"], ["-?"], ["--helpfull"], ["--epochs=3", "--help"]])
def test_asking_for_help_exits_0(argv, capsys):
    from absl import app

    app.define_help_flags()
    with flagsaver.flagsaver(), pytest.raises(SystemExit) as info:
        flag_definitions.flags_parser("train.py")(["train.py", *argv])
    assert info.value.code == 0 and capsys.readouterr().out  # the help, on stdout


def test_a_bad_flag_still_exits_with_one_line():
    with flagsaver.flagsaver(), pytest.raises(SystemExit) as info:
        flag_definitions.flags_parser("train.py")(["train.py", "--epochs=x"])
    assert str(info.value.code).startswith("train.py: error: ")


@pytest.mark.parametrize("name", ["cifar10", "demo", "imagenet", "stl10"])
def test_a_flagfile_names_its_recipe_and_sets_only_what_it_changes(name):
    from byol_tf.training import recipes

    with open(os.path.join(ROOT, "configs", f"{name}.flags")) as handle:
        values = dict(
            line[2:].strip().partition("=")[::2] for line in handle if line.startswith("--")
        )
    assert values["recipe"] in ("auto", "paper", "small_data", "short")
    chosen = {
        "paper": recipes.paper(float(values.get("epochs", 1))),
        "small_data": recipes.SMALL_DATA,
        "short": recipes.SHORT,
    }.get(values["recipe"])
    for setting in recipes.SETTINGS:
        if setting not in values:
            continue
        # `auto` chooses by budget: a flagfile on auto leaves every recipe setting to it.
        assert chosen is not None, f"{name}.flags sets --{setting} under --recipe=auto"
        own = getattr(chosen, setting)
        given = type(own)(values[setting]) if not isinstance(own, bool) else values[setting]
        assert given != own, f"{name}.flags restates --{setting}={own} of its recipe"
