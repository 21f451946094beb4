"""The settings of train.py, `TrainConfig`: each default, check, help text and resume class once.

A frozen dataclass, usable without flags; `byol_tf.cli.flag_definitions` turns its fields into
absl flags. The other programs' settings are in `byol_tf.settings.program_configs`, the field
machinery in `byol_tf.settings.fields`.
"""

import dataclasses
from typing import Any

from byol_tf.settings import view_presets

# The allowed values of the enumerated settings (the flags of these are enums), each owned by
# byol_tf.settings.choices.
from byol_tf.settings.choices import (
    AUGMENT_ON,
    BLUR_PADDINGS,
    CROP_SAMPLERS,
    ENCODERS,
    KERNEL_INITIALIZERS,
    OPTIMIZERS,
    PRECISIONS,
    PRESETS,
    RECIPE_NAMES,
    SCHEDULE_NAMES,
    STRATEGIES,
)
from byol_tf.settings.fields import (
    ARCHITECTURE,
    BELOW_ONE,
    DATA,
    DATA_STREAM,
    FREE,
    IMAGE_SIZE,
    MODEL,
    NON_NEGATIVE,
    NON_NEGATIVE_INT,
    OPTIMISATION,
    POSITIVE,
    POSITIVE_INT,
    RESUME_CLASSES,
    RUN,
    SCHEDULE,
    SEED,
    UNIT_INTERVAL,
    check,
    check_fields,
    explicit_field,
    flag_fields,
    option,
)
from byol_tf.settings.protocols import KNN_NEIGHBOURS


def parse_augment(entries, flag="--augment") -> dict[str, float | tuple[float, ...]]:
    """`name=value` / `name=low:high` strings as `two_views` overrides.

    `crop_area=0.25:1` gives `{"crop_area": (0.25, 1.0)}`; `view2_blur_prob=0` one float.

    Args:
        entries: iterable of strings.
        flag: the flag named in the error message.

    Raises:
        ValueError: for an entry that is not `name=value[:value]` with numeric values.
    """
    overrides = {}
    for entry in entries:
        name, _, value = entry.partition("=")
        try:
            numbers = tuple(float(v) for v in value.split(":"))
        except ValueError:
            numbers = ()
        if not name.strip() or not numbers:
            raise ValueError(
                f"{flag} entries must look like name=value or name=low:high "
                f"(e.g. crop_area=0.25:1.0). Received: {flag}={entry}"
            )
        overrides[name.strip()] = numbers[0] if len(numbers) == 1 else numbers
    return overrides


def checked_augment(
    entries, preset="small", flag="--augment"
) -> dict[str, float | tuple[float, ...]]:
    """`parse_augment`, then each value checked against the `ViewConfig` ranges of `preset`.

    Raises:
        ValueError: one line naming `flag`, for a malformed, unknown or out-of-range entry.
    """
    overrides = parse_augment(entries, flag)
    try:
        view_presets.view_configs(preset, **overrides)
    except ValueError as error:
        raise ValueError(f"{flag}: {error}") from None
    return overrides


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a BYOL pretraining run needs; `from_flags` builds it from train.py's flags.

    Each attribute but `explicit` is the flag of the same name; its entry below is the help.

    Attributes:
        dataset: Training data: 'demo' (offline Fashion-MNIST subset), a tensorflow-datasets name
            (cifar10, stl10, imagenet2012, ...) or a folder.
        data_dir: tensorflow-datasets data directory.
        manual_dir: tensorflow-datasets manual download directory (imagenet2012 tar files).
        train_split: Split to pretrain on (e.g. train, unlabelled, 'train+unlabelled').
        eval_split: Labelled split for the kNN monitor ('' = none), sharing no image with
            --train_split (a folder's split is its subfolder of that name).
        image_size: Side of the square training views, in pixels (at most 4096).
        preset: Augmentation preset; default 'small' (no blur) at <= 64 px, else 'imagenet'
            (docs/algorithm.md §5).
        augment: Augmentation overrides name=value (ViewConfig fields; view1_/view2_ prefix for one
            view), e.g. --augment=crop_area=0.25:1.0,view2_solarize_prob=0 (':' separates a range).
        skip_corrupt: Skip unreadable images instead of failing.
        crop_sampler: Random-resized-crop sampler: 'rejection' (redraw until the crop fits, as
            torchvision) or 'clamped' (one draw clamped to the image, the official code's);
            default: from --recipe.
        blur_padding: How the Gaussian blur pads the image: 'reflect' or 'zero' (the official
            code's 'SAME' convolution); default: from --recipe.
        augment_on: Where the augmentation after the crop runs: 'host' (the tf.data pipeline
            on the CPU) or 'device' (inside the compiled train step, per replica; the host only
            decodes and crops). Default: device when a GPU or TPU is visible, else host; a
            resumed run keeps its own.
        encoder: Encoder network.
        width_multiplier: Channel multiplier of the ResNet.
        cifar_stem: 3x3 stride-1 stem without max-pool (small images).
        projection_dim: Output size of projector/predictor.
        hidden_dim: Hidden width of projector/predictor.
        joint_views: Forward both views as one batch (BN statistics over both; faster, not the
            paper's setting).
        zero_init_residual: Start the gamma of the last BatchNorm of each residual block at 0 (the
            official code's default; the paper's results used 1); default: from --recipe.
        kernel_initializer: Initialisation of the encoder's convolutions: 'he_normal' or
            'haiku' (Haiku's default, the official network's: 1/sqrt(fan_in) times a normal
            truncated to [-2, 2]; the heads' and probe's dense layers too); default: from
            --recipe.
        head_output_bias: A bias in the last Dense of projector and predictor (the official
            heads have none); default: from --recipe.
        batch_size: Global batch size (all replicas together).
        epochs: Number of training epochs.
        steps_per_epoch: Steps per epoch; default: the number of examples // batch_size.
        accumulation_steps: Micro-batches per optimiser step: --batch_size is the effective batch,
            each micro-batch has batch_size/accumulation_steps images (BN statistics per
            micro-batch).
        recipe: Optimisation recipe for the unset settings below: 'paper' (the paper: the
            official presets by epochs, gamma 1), 'official_code' (the same with the official
            code's zero-initialised residual gamma), 'small_data' (CIFAR-10 ResNet-18), 'short'
            (AdamW, constant rate and tau, for a few thousand steps) or 'auto' (chosen from steps
            and data-set size; see docs/recipes.md). Flags set explicitly always win.
        optimizer: 'lars' (the paper's) or 'adamw' (decoupled weight decay; suits runs of a few
            thousand steps). Biases and BatchNorm parameters are excluded from weight decay in
            both. Default: from --recipe.
        learning_rate: LARS: base learning rate per 256 images (the peak rate is learning_rate *
            batch_size / 256, the paper's scaling rule); AdamW: the rate itself. Default: from
            --recipe.
        lr_schedule: After the linear warm-up: 'cosine' decay to 0 (the paper's) or 'constant'.
            Default: from --recipe.
        warmup_epochs: Linear warm-up length, in epochs. Default: from --recipe.
        weight_decay: Weight decay (biases/BN excluded). Default: from --recipe.
        momentum: LARS momentum. Default: from --recipe.
        eta: LARS trust coefficient. Default: from --recipe.
        base_tau: Initial target decay rate. Default: from --recipe.
        tau_schedule: Target decay: 'cosine' from --base_tau to 1 over the run (the paper's) or
            'constant' at --base_tau (short runs). Default: from --recipe.
        predictor_lr_multiplier: The predictor's learning rate relative to the rest of the
            network (the paper: 1). Default: from --recipe.
        model_dir: Folder for checkpoints, TensorBoard logs, results; rerunning with the same folder
            resumes.
        allow_schedule_change: Resume even though a schedule setting (batch size, epochs,
            learning rate, warm-up, tau, schedules, recipe, ...) differs from the run's; the
            change is recorded in model_dir/schedule_changes.json. Without it such a resume is
            refused.
        export_dir: If set, export the encoder as a SavedModel for TF Serving here at the end
            (export_dir/<version>/).
        init_from: Start a new run from these online and target networks instead of random
            ones: an official BYOL checkpoint (.pkl, e.g. pretrain_res50x1.pkl), a byol_tf run
            folder or a .keras checkpoint. The flags must build the same networks (for the
            official files --encoder, --width_multiplier, --hidden_dim=4096,
            --projection_dim=256, --head_output_bias=false). Ignored when model_dir resumes.
        seed: Seed of initialisation, shuffling and augmentation.
        deterministic: Enable TF op determinism (slower) so that a run is bit-reproducible from its
            seed.
        strategy: Distribution strategy; 'auto' uses MirroredStrategy with several GPUs, else the
            default.
        tpu: TPU name or address, for --strategy=tpu.
        mixed_precision: Keras dtype policy.
        jit_compile: Compile the train step with XLA. Unset: the faster exact path where the
            run is, printed in one line: XLA on a GPU or TPU, TensorFlow's own (oneDNN) kernels
            on a CPU (README 'Speed on CPUs').
        steps_per_execution: Train steps per tf.function call (EMA updates are then compounded; see
            TargetEMA).
        checkpoint_every_steps: Checkpoint interval in steps (0 = only at epoch ends).
        keep_checkpoints: Number of checkpoints to keep.
        knn_every_epochs: kNN monitor interval in epochs (0 = off); needs a labelled --eval_split.
        knn_k: Neighbours of the kNN monitor.
        knn_max_examples: At most this many train examples, spread evenly over the split, form the
            kNN memory bank.
        knn_labels_per_class: Few-label kNN: keep this many labelled images per class of the
            bank (the mean over 5 seeded class-balanced draws); 0 = every image of the bank.
        collapse_threshold: Warn when the std of l2-normalised projections (in [0, 1]) falls
            below this.
        collapse_patience: Stop after this many collapsed epochs in a row.
        log_every_steps: TensorBoard scalar interval.
        demo_baseline: At the end, also report the kNN accuracy of the raw pixels (in [0, 1],
            and normalised as the encoder sees them) and of the same encoder at random
            initialisation.
        explicit: the names of the fields that the command line or a flagfile set.
    """

    # data
    dataset: str = option(DATA, "demo", resume=DATA_STREAM)
    data_dir: str | None = option(DATA, None, path=True, resume=FREE)
    manual_dir: str | None = option(DATA, None, path=True, resume=FREE)
    train_split: str = option(DATA, "train", resume=DATA_STREAM)
    eval_split: str | None = option(DATA, "test", resume=FREE)
    image_size: int = option(DATA, 28, valid=IMAGE_SIZE, resume=ARCHITECTURE)
    preset: str | None = option(DATA, None, choices=PRESETS, resume=DATA_STREAM)
    augment: tuple = option(
        DATA,
        ("crop_area=0.5:1.0", "jitter_prob=0.3", "view2_solarize_prob=0"),
        resume=DATA_STREAM,
    )
    skip_corrupt: bool = option(DATA, False, resume=FREE)
    crop_sampler: str | None = option(DATA, None, choices=CROP_SAMPLERS, resume=DATA_STREAM)
    blur_padding: str | None = option(DATA, None, choices=BLUR_PADDINGS, resume=DATA_STREAM)
    augment_on: str | None = option(DATA, None, choices=AUGMENT_ON, resume=SCHEDULE)
    # model
    encoder: str = option(MODEL, "resnet18", choices=ENCODERS, resume=ARCHITECTURE)
    width_multiplier: float = option(MODEL, 0.25, valid=POSITIVE, resume=ARCHITECTURE)
    cifar_stem: bool = option(MODEL, False, resume=ARCHITECTURE)
    projection_dim: int = option(MODEL, 128, valid=POSITIVE_INT, resume=ARCHITECTURE)
    hidden_dim: int = option(MODEL, 512, valid=POSITIVE_INT, resume=ARCHITECTURE)
    joint_views: bool = option(MODEL, False, resume=SCHEDULE)
    zero_init_residual: bool | None = option(MODEL, None, resume=FREE)
    kernel_initializer: str | None = option(MODEL, None, choices=KERNEL_INITIALIZERS, resume=FREE)
    head_output_bias: bool | None = option(MODEL, None, resume=ARCHITECTURE)
    # optimisation
    batch_size: int = option(OPTIMISATION, 64, valid=POSITIVE_INT, resume=SCHEDULE)
    epochs: int = option(OPTIMISATION, 20, valid=POSITIVE_INT, resume=SCHEDULE)
    steps_per_epoch: int | None = option(OPTIMISATION, None, valid=POSITIVE_INT, resume=SCHEDULE)
    accumulation_steps: int = option(OPTIMISATION, 1, valid=POSITIVE_INT, resume=SCHEDULE)
    recipe: str = option(OPTIMISATION, "auto", choices=RECIPE_NAMES, resume=SCHEDULE)
    optimizer: str | None = option(OPTIMISATION, None, choices=OPTIMIZERS, resume=ARCHITECTURE)
    learning_rate: float | None = option(OPTIMISATION, None, valid=POSITIVE, resume=SCHEDULE)
    lr_schedule: str | None = option(OPTIMISATION, None, choices=SCHEDULE_NAMES, resume=SCHEDULE)
    warmup_epochs: float | None = option(OPTIMISATION, None, valid=NON_NEGATIVE, resume=SCHEDULE)
    weight_decay: float | None = option(OPTIMISATION, None, valid=NON_NEGATIVE, resume=SCHEDULE)
    momentum: float | None = option(OPTIMISATION, None, valid=BELOW_ONE, resume=SCHEDULE)
    eta: float | None = option(OPTIMISATION, None, valid=POSITIVE, resume=SCHEDULE)
    base_tau: float | None = option(OPTIMISATION, None, valid=UNIT_INTERVAL, resume=SCHEDULE)
    tau_schedule: str | None = option(OPTIMISATION, None, choices=SCHEDULE_NAMES, resume=SCHEDULE)
    predictor_lr_multiplier: float | None = option(
        OPTIMISATION, None, valid=POSITIVE, resume=SCHEDULE
    )
    # run
    model_dir: str = option(RUN, "runs/demo", path=True, resume=FREE)
    allow_schedule_change: bool = option(RUN, False, resume=FREE)
    export_dir: str | None = option(RUN, None, path=True, resume=FREE)
    init_from: str | None = option(RUN, None, path=True, resume=FREE)
    seed: int = option(RUN, 0, valid=SEED, resume=DATA_STREAM)
    deterministic: bool = option(RUN, False, resume=FREE)
    strategy: str = option(RUN, "auto", choices=STRATEGIES, resume=FREE)
    tpu: str | None = option(RUN, None, resume=FREE)
    mixed_precision: str = option(RUN, "float32", choices=PRECISIONS, resume=ARCHITECTURE)
    jit_compile: bool | None = option(RUN, None, resume=FREE)
    steps_per_execution: int = option(RUN, 1, valid=POSITIVE_INT, resume=FREE)
    checkpoint_every_steps: int = option(RUN, 500, valid=NON_NEGATIVE_INT, resume=FREE)
    keep_checkpoints: int = option(RUN, 3, valid=POSITIVE_INT, resume=FREE)
    knn_every_epochs: int = option(RUN, 1, valid=NON_NEGATIVE_INT, resume=FREE)
    knn_k: int = option(RUN, KNN_NEIGHBOURS, valid=POSITIVE_INT, resume=FREE)
    knn_max_examples: int = option(RUN, 10_000, valid=POSITIVE_INT, resume=FREE)
    knn_labels_per_class: int = option(RUN, 0, valid=NON_NEGATIVE_INT, resume=FREE)
    collapse_threshold: float = option(RUN, 0.01, valid=UNIT_INTERVAL, resume=FREE)
    collapse_patience: int = option(RUN, 3, valid=POSITIVE_INT, resume=FREE)
    log_every_steps: int = option(RUN, 10, valid=POSITIVE_INT, resume=FREE)
    demo_baseline: bool = option(RUN, True, resume=FREE)
    explicit: tuple = explicit_field()

    def __post_init__(self) -> None:
        check_fields(self)
        checked_augment(self.augment, self.preset or "small")  # before any data is read
        check(
            self.batch_size % self.accumulation_steps == 0,
            "batch_size",
            self.batch_size,
            f"divisible by --accumulation_steps={self.accumulation_steps}",
        )
        # BatchNorm normalises a batch by its own mean and variance: one example becomes 0
        # and the encoder cannot learn. Several replicas synchronise their statistics, so the
        # batch that counts is the global one of each accumulation step.
        steps = self.accumulation_steps
        least = "at least 2"
        if steps > 1:
            least = f"at least {2 * steps} (2 per --accumulation_steps={steps} micro-batch)"
        check(
            self.batch_size // steps >= 2,
            "batch_size",
            self.batch_size,
            f"{least} (BatchNorm normalises each batch by its own "
            "statistics: a batch of one example becomes 0 and the encoder cannot learn)",
        )
        check(
            self.strategy != "tpu" or bool(self.tpu),
            "tpu",
            self.tpu,
            "set when --strategy=tpu (a TPU name or grpc:// address)",
        )

    def augment_overrides(self) -> dict[str, float | tuple[float, ...] | str]:
        """`--augment` entries (and `--crop_sampler`, `--blur_padding` when set) as `two_views`
        overrides."""
        overrides = parse_augment(self.augment)
        for name in ("crop_sampler", "blur_padding"):
            if getattr(self, name) is not None:
                overrides[name] = getattr(self, name)
        return overrides

    @property
    def depth(self) -> int:
        """ResNet depth named by `encoder`."""
        return int(self.encoder.removeprefix("resnet"))

    def to_json(self) -> dict[str, Any]:
        """The settings as a JSON-serialisable dict (without `explicit`)."""
        return {field.name: getattr(self, field.name) for field in flag_fields(self)}


def resumed_as(resume_class, config_class=None) -> tuple[str, ...]:
    """The names of `config_class`'s settings (default `TrainConfig`) of one resume class."""
    if resume_class not in RESUME_CLASSES:
        raise ValueError(
            f"resume_class must be one of {RESUME_CLASSES}. Received: {resume_class!r}"
        )
    fields = flag_fields(config_class or TrainConfig)
    return tuple(f.name for f in fields if f.metadata.get("resume") == resume_class)
