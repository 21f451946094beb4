"""The settings of the programs beside train.py: evaluate, export and import.

Frozen dataclasses, usable without flags, declared like
`byol_tf.settings.train_config.TrainConfig`.
"""

import dataclasses
import os

from byol_tf.settings.choices import LINEAR_PRESETS, LINEAR_SELECTIONS, PROTOCOLS
from byol_tf.settings.fields import (
    EVALUATION,
    EXPORT,
    FRACTION,
    IMAGE_SIZE,
    IMPORT,
    POSITIVE_INT,
    check,
    check_fields,
    explicit_field,
    floats,
    option,
)
from byol_tf.settings.train_config import TrainConfig


def _train_default(name):
    """The default of a `TrainConfig` field: that of a flag evaluate.py shares with train.py."""
    return TrainConfig.__dataclass_fields__[name].default


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """The settings of evaluate.py; `from_flags` builds them from its flags.

    The flags it shares with train.py (model_dir, dataset, data_dir, train_split, batch_size,
    epochs) have train.py's defaults, so that both programs can define them in one process.

    Attributes:
        model_dir: Training run (checkpoints/, run_config.json).
        checkpoint: A .keras checkpoint to evaluate; default the newest readable one in
            model_dir. Unless model_dir is set, its run folder (the one above its
            checkpoints/ folder) gives the data set and the normalisation.
        protocol: Evaluation protocol: 'linear' (fast probe on cached features of centre crops),
            'linear_official' (the paper's: frozen encoder, classifier trained on random-resized
            crops and flips), 'knn' or 'finetune' (docs/algorithm.md §6).
        label_fraction: Share of the train labels used (0.01, 0.1, 1.0).
        dataset: Data source; unless set, the run's.
        data_dir: tensorflow-datasets data directory; unless set, the run's.
        train_split: Labelled split the classifier is fitted on.
        test_split: Split scored, sharing no image with --train_split; unless set, the run's
            eval_split, else test.
        batch_size: Batch size of features, of the linear_official classifier and of fine-tuning;
            unless set, linear_official takes --linear_preset's.
        epochs: Unless set: linear 20, linear_official --linear_preset's, finetune 30.
        linear_preset: Budget of linear_official: 'small' (10 epochs at --batch_size, for small
            data) or 'imagenet' (80 epochs at batch 1024, the paper's, or 4096 with
            --linear_selection=official, the official code's); --epochs and --batch_size
            override it (docs/algorithm.md §6).
        linear_selection: Learning rate of linear_official: 'paper' (the paper's 5 base rates
            0.4, 0.3, 0.2, 0.1, 0.05, each trained on train minus a held-out part of 10 %, at
            most 10,009 images; the best on it is scored on the test split, appendix C.1) or
            'official' (base rate 0.2 on all of train, the official code's run).
        saved_model: Evaluate an exported SavedModel, not a checkpoint; without model_dir it
            needs dataset.
        output: Results JSON; default <model_dir, else the --saved_model or --checkpoint
            folder>/eval_<protocol>.json.
        explicit: the names of the fields that the command line or a flagfile set.
    """

    model_dir: str | None = option(EVALUATION, _train_default("model_dir"))
    checkpoint: str | None = option(EVALUATION, None, path=True)
    protocol: str = option(EVALUATION, "knn", choices=PROTOCOLS)
    label_fraction: float = option(EVALUATION, 1.0, valid=FRACTION)
    dataset: str | None = option(EVALUATION, None, flag_default=_train_default("dataset"))
    data_dir: str | None = option(EVALUATION, None)
    train_split: str = option(EVALUATION, _train_default("train_split"))
    test_split: str | None = option(EVALUATION, None)
    batch_size: int = option(EVALUATION, _train_default("batch_size"), valid=POSITIVE_INT)
    epochs: int | None = option(
        EVALUATION, None, valid=POSITIVE_INT, flag_default=_train_default("epochs")
    )
    linear_preset: str = option(EVALUATION, "small", choices=LINEAR_PRESETS)
    linear_selection: str = option(EVALUATION, "paper", choices=LINEAR_SELECTIONS)
    saved_model: str | None = option(EVALUATION, None)
    output: str | None = option(EVALUATION, None)
    explicit: tuple = explicit_field()

    def __post_init__(self) -> None:
        if self.saved_model and "model_dir" not in self.explicit:
            # --saved_model alone evaluates the export, without the default training run folder.
            object.__setattr__(self, "model_dir", None)
        if self.checkpoint and "model_dir" not in self.explicit:
            object.__setattr__(self, "model_dir", _run_folder_of(self.checkpoint))
        check_fields(self)
        if not (self.model_dir or self.saved_model or self.checkpoint):
            raise ValueError(
                "pass --model_dir (a training run), --checkpoint (a .keras checkpoint) or "
                "--saved_model (an export)"
            )
        if self.checkpoint and self.saved_model:
            raise ValueError(
                f"--checkpoint={self.checkpoint} and --saved_model={self.saved_model}: pass one "
                "encoder to evaluate"
            )
        if self.checkpoint:
            _check_checkpoint_file(self.checkpoint)
        if self.checkpoint and not (self.model_dir or self.dataset):
            raise ValueError(
                f"--checkpoint={self.checkpoint} is not in a run folder's checkpoints/: pass "
                "--model_dir (its run, for the data set and normalisation) or --dataset"
            )
        if self.protocol == "finetune" and self.saved_model:
            raise ValueError(
                "--protocol=finetune needs a checkpoint: pass --model_dir, not --saved_model"
            )
        if self.saved_model and not (self.model_dir or self.dataset):
            # An export carries its image size, crop and normalisation, not its data set.
            raise ValueError(
                f"--saved_model={self.saved_model} without --model_dir needs --dataset: the "
                "labelled data to evaluate on ('demo', a tensorflow-datasets name or an image "
                "folder); or pass --model_dir to take it from the training run"
            )


def _check_checkpoint_file(path):
    """Refuses a folder as --checkpoint, in one line (a missing file is the loader's to name)."""
    if os.path.isdir(path):
        raise ValueError(
            f"--checkpoint={path} is a folder; expected a .keras checkpoint file (for the newest "
            "checkpoint of a run folder, pass --model_dir)"
        )


def _run_folder_of(checkpoint):
    """The run folder of `<run>/checkpoints/ckpt-N.keras`, or None for a checkpoint elsewhere."""
    folder = os.path.dirname(os.path.abspath(checkpoint))
    return os.path.dirname(folder) if os.path.basename(folder) == "checkpoints" else None


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """The settings of the export program; `from_flags` builds them from its flags.

    Attributes:
        model_dir: Training run folder (checkpoints, run_config.json); default the run
            folder of --checkpoint (the one above its checkpoints/ folder).
        checkpoint: A .keras checkpoint; default the newest one.
        export_dir: Export base folder; versions go in numbered folders.
        version: Export version (1, 2, ...); default the next free number.
        mean: Normalisation mean, if model_dir has no run_config.json.
        std: Normalisation std, if model_dir has no run_config.json.
        explicit: the names of the fields that the command line or a flagfile set.
    """

    model_dir: str | None = option(EXPORT, None)
    checkpoint: str | None = option(EXPORT, None)
    export_dir: str | None = option(EXPORT, None, required=True)
    version: int | None = option(EXPORT, None, valid=POSITIVE_INT)
    mean: tuple | None = option(EXPORT, None)
    std: tuple | None = option(EXPORT, None)
    explicit: tuple = explicit_field()

    def __post_init__(self) -> None:
        check_fields(self)
        if not (self.model_dir or self.checkpoint):
            raise ValueError("pass --model_dir or --checkpoint")
        for name in ("mean", "std"):  # strings from the flags; None: from run_config.json
            values = getattr(self, name)
            object.__setattr__(self, name, floats(name, values) if values else None)
        std = ",".join(map(str, self.std or ()))
        check(all(v > 0 for v in self.std or ()), "std", std, "positive (each channel)")
        if self.checkpoint:
            _check_checkpoint_file(self.checkpoint)
        if self.checkpoint and not self.model_dir:
            object.__setattr__(self, "model_dir", _run_folder_of(self.checkpoint))
        if not self.model_dir and not (self.mean and self.std):
            raise ValueError(
                f"--checkpoint={self.checkpoint} is not in a run folder's checkpoints/: pass "
                "--model_dir (the run, whose run_config.json records the normalisation), or "
                "--mean and --std (3 comma-separated numbers each, in [0, 1] pixel units)"
            )


@dataclasses.dataclass(frozen=True)
class ImportConfig:
    """The settings of the import program; `from_flags` builds them from its flags.

    Attributes:
        checkpoint: An official BYOL checkpoint (pretrain_res50x1.pkl, pretrain_res200x2.pkl, or
            any file deepmind-research byol/ wrote).
        model_dir: New run folder for the imported online and target networks (a byol_tf
            checkpoint and run_config.json), for evaluate.py and train.py --init_from.
        export_dir: If set, also write a SavedModel for TF Serving here (serving_default and
            classify signatures).
        image_size: Input side of the imported encoder (the official networks trained at 224;
            at most 4096).
        dataset: The data set the checkpoint was pretrained on, recorded in run_config.json
            (evaluate.py's default --dataset).
        manual_dir: tensorflow-datasets manual download directory of that data set (imagenet2012
            tar files), recorded in run_config.json for evaluate.py.
        explicit: the names of the fields that the command line or a flagfile set.
    """

    checkpoint: str | None = option(IMPORT, None, required=True, path=True)
    model_dir: str | None = option(IMPORT, None, path=True)
    export_dir: str | None = option(IMPORT, None, path=True)
    image_size: int = option(IMPORT, 224, valid=IMAGE_SIZE)
    dataset: str = option(IMPORT, "imagenet2012")
    manual_dir: str | None = option(IMPORT, None, path=True)
    explicit: tuple = explicit_field()

    def __post_init__(self) -> None:
        check_fields(self)
        if not (self.model_dir or self.export_dir):
            raise ValueError("pass --model_dir, --export_dir or both: where the import goes")
        if os.path.isdir(self.checkpoint):
            raise ValueError(
                f"--checkpoint={self.checkpoint} is a folder; expected an official BYOL "
                "checkpoint file (pretrain_res50x1.pkl, pretrain_res200x2.pkl, or another .pkl "
                "that deepmind-research byol/ wrote)"
            )
