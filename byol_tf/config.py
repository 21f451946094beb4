"""Command-line flags of train.py and the frozen run configuration built from them."""

import dataclasses
import os

from absl import flags

ENCODERS = ("resnet18", "resnet34", "resnet50")
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
OPTIMIZERS = ("lars", "adamw")
SCHEDULES = ("cosine", "constant")


def parse_augment(entries, flag="--augment"):
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


def checked_augment(entries, preset="small", flag="--augment"):
    """`parse_augment`, then each value checked against the `ViewConfig` ranges of `preset`.

    Raises:
        ValueError: one line naming `flag`, for a malformed, unknown or out-of-range entry.
    """
    from byol_tf import augment  # TensorFlow is imported only when entries are checked

    overrides = parse_augment(entries, flag)
    try:
        augment.view_configs(preset, **overrides)
    except ValueError as error:
        raise ValueError(f"{flag}: {error}") from None
    return overrides


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a BYOL pretraining run needs; built from flags by `from_flags`.

    The fields mirror the flags of the same names (see `define_flags` for their meaning).
    """

    dataset: str = "demo"
    data_dir: str | None = None
    manual_dir: str | None = None
    train_split: str = "train"
    eval_split: str | None = "test"
    image_size: int = 28
    preset: str | None = None
    augment: tuple = ("crop_area=0.7:1.0",)
    encoder: str = "resnet18"
    width_multiplier: float = 0.25
    cifar_stem: bool = False
    projection_dim: int = 128
    hidden_dim: int = 512
    batch_size: int = 64
    epochs: int = 12
    steps_per_epoch: int | None = None
    optimizer: str = "lars"
    learning_rate: float = 0.3
    lr_schedule: str = "cosine"
    warmup_epochs: float = 1.0
    weight_decay: float = 1e-5
    momentum: float = 0.9
    eta: float = 0.02
    base_tau: float = 0.996
    tau_schedule: str = "cosine"
    model_dir: str = "runs/demo"
    export_dir: str | None = None
    seed: int = 0
    deterministic: bool = False
    strategy: str = "auto"
    tpu: str | None = None
    mixed_precision: str = "float32"
    jit_compile: bool = False
    steps_per_execution: int = 1
    accumulation_steps: int = 1
    joint_views: bool = False
    checkpoint_every_steps: int = 500
    keep_checkpoints: int = 3
    knn_every_epochs: int = 1
    knn_k: int = 200
    knn_max_examples: int = 10_000
    collapse_threshold: float = 0.01
    collapse_patience: int = 3
    skip_corrupt: bool = False
    log_every_steps: int = 10
    demo_baseline: bool = True

    def __post_init__(self):
        _check(self.batch_size >= 1, "batch_size", self.batch_size, "a positive int")
        _check(self.epochs >= 1, "epochs", self.epochs, "a positive int")
        _check(self.image_size >= 1, "image_size", self.image_size, "a positive int")
        _check(
            self.steps_per_epoch is None or self.steps_per_epoch >= 1,
            "steps_per_epoch",
            self.steps_per_epoch,
            "a positive int",
        )
        _check(self.learning_rate > 0, "learning_rate", self.learning_rate, "positive")
        _check(self.warmup_epochs >= 0, "warmup_epochs", self.warmup_epochs, ">= 0")
        _check(0 <= self.base_tau <= 1, "base_tau", self.base_tau, "in [0, 1]")
        _check(self.optimizer in OPTIMIZERS, "optimizer", self.optimizer, f"one of {OPTIMIZERS}")
        for name in ("lr_schedule", "tau_schedule"):
            value = getattr(self, name)
            _check(value in SCHEDULES, name, value, f"one of {SCHEDULES}")
        _check(self.encoder in ENCODERS, "encoder", self.encoder, f"one of {', '.join(ENCODERS)}")
        _check(self.strategy in STRATEGIES, "strategy", self.strategy, f"one of {STRATEGIES}")
        _check(
            self.mixed_precision in PRECISIONS,
            "mixed_precision",
            self.mixed_precision,
            f"one of {PRECISIONS}",
        )
        _check(self.width_multiplier > 0, "width_multiplier", self.width_multiplier, "positive")
        _check(
            self.steps_per_execution >= 1,
            "steps_per_execution",
            self.steps_per_execution,
            "a positive int",
        )
        self._check_augment()
        _check(
            self.accumulation_steps >= 1,
            "accumulation_steps",
            self.accumulation_steps,
            "a positive int",
        )
        _check(
            self.batch_size % self.accumulation_steps == 0,
            "batch_size",
            self.batch_size,
            f"divisible by --accumulation_steps={self.accumulation_steps}",
        )
        _check(
            self.strategy != "tpu" or bool(self.tpu),
            "tpu",
            self.tpu,
            "set when --strategy=tpu (a TPU name or grpc:// address)",
        )

    def augment_overrides(self):
        """`--augment` entries as `two_views` overrides (see `parse_augment`)."""
        return parse_augment(self.augment)

    def _check_augment(self):
        """Malformed, unknown or out-of-range `--augment` entries fail here, before any data."""
        from byol_tf import augment

        checked_augment(self.augment, self.preset if self.preset in augment.PRESETS else "small")

    @property
    def depth(self):
        """ResNet depth named by `encoder`."""
        return int(self.encoder.removeprefix("resnet"))

    def to_json(self):
        """The configuration as a JSON-serialisable dict."""
        return dataclasses.asdict(self)


def _check(ok, name, value, expected):
    if not ok:
        raise ValueError(f"--{name} must be {expected}. Received: --{name}={value}")


class _Definer:
    """Forwards `DEFINE_*` calls to absl, skipping flags that are already defined.

    train.py and evaluate.py share names (--model_dir, --dataset, ...); this lets both binaries
    (and a test process importing both) define them without a DuplicateFlagError.
    """

    def __getattr__(self, name):
        define = getattr(flags, name)

        def guarded(flag_name, *args, **kwargs):
            if flag_name not in flags.FLAGS:
                define(flag_name, *args, **kwargs)

        return guarded


def define_flags():
    """Defines the flags of train.py (idempotent)."""
    d = TrainConfig()
    f = _Definer()
    f.DEFINE_string(
        "dataset",
        d.dataset,
        "Training data: 'demo' (offline Fashion-MNIST subset), "
        "a tensorflow-datasets name (cifar10, stl10, imagenet2012, ...) or a folder.",
    )
    f.DEFINE_string("data_dir", d.data_dir, "tensorflow-datasets data directory.")
    f.DEFINE_string(
        "manual_dir",
        d.manual_dir,
        "tensorflow-datasets manual download directory (imagenet2012 tar files).",
    )
    f.DEFINE_string(
        "train_split",
        d.train_split,
        "Split to pretrain on (e.g. train, unlabelled, 'train+unlabelled').",
    )
    f.DEFINE_string("eval_split", d.eval_split, "Labelled split for the kNN monitor ('' = none).")
    f.DEFINE_integer("image_size", d.image_size, "Side of the square training views, in pixels.")
    f.DEFINE_enum(
        "preset",
        d.preset,
        ["imagenet", "small"],
        "Augmentation preset; default "
        "'small' (no blur) at <= 64 px, else 'imagenet' (SPEC table 6).",
    )
    f.DEFINE_list(
        "augment",
        list(d.augment),
        "Augmentation overrides name=value (ViewConfig fields; view1_/view2_ prefix for one "
        "view), e.g. --augment=crop_area=0.25:1.0,view2_solarize_prob=0 (':' separates a range).",
    )
    f.DEFINE_string("encoder", d.encoder, f"Encoder: one of {', '.join(ENCODERS)}.")
    f.DEFINE_float("width_multiplier", d.width_multiplier, "Channel multiplier of the ResNet.")
    f.DEFINE_bool("cifar_stem", d.cifar_stem, "3x3 stride-1 stem without max-pool (small images).")
    f.DEFINE_integer("projection_dim", d.projection_dim, "Output size of projector/predictor.")
    f.DEFINE_integer("hidden_dim", d.hidden_dim, "Hidden width of projector/predictor.")
    f.DEFINE_integer("batch_size", d.batch_size, "Global batch size (all replicas together).")
    f.DEFINE_integer("epochs", d.epochs, "Number of training epochs.")
    f.DEFINE_integer(
        "steps_per_epoch",
        d.steps_per_epoch,
        "Steps per epoch; default: the number of examples // batch_size.",
    )
    f.DEFINE_enum(
        "optimizer",
        d.optimizer,
        list(OPTIMIZERS),
        "'lars' (the paper's) or 'adamw' (decoupled weight decay; suits runs of a few hundred "
        "steps). Biases and BatchNorm parameters are excluded from weight decay in both.",
    )
    f.DEFINE_float(
        "learning_rate",
        d.learning_rate,
        "Base learning rate per 256 images: the peak rate is learning_rate * batch_size / 256.",
    )
    f.DEFINE_enum(
        "lr_schedule",
        d.lr_schedule,
        list(SCHEDULES),
        "After the linear warm-up: 'cosine' decay to 0 (the paper's) or 'constant'.",
    )
    f.DEFINE_float("warmup_epochs", d.warmup_epochs, "Linear warm-up length, in epochs.")
    f.DEFINE_float("weight_decay", d.weight_decay, "Weight decay (biases/BN excluded).")
    f.DEFINE_float("momentum", d.momentum, "LARS momentum.")
    f.DEFINE_float("eta", d.eta, "LARS trust coefficient.")
    f.DEFINE_float("base_tau", d.base_tau, "Initial target decay rate.")
    f.DEFINE_enum(
        "tau_schedule",
        d.tau_schedule,
        list(SCHEDULES),
        "Target decay: 'cosine' from --base_tau to 1 over the run (the paper's) or 'constant' "
        "at --base_tau (short runs).",
    )
    f.DEFINE_string(
        "model_dir",
        d.model_dir,
        "Folder for checkpoints, TensorBoard logs, results; "
        "rerunning with the same folder resumes.",
    )
    f.DEFINE_string(
        "export_dir",
        d.export_dir,
        "If set, export the encoder as a SavedModel for "
        "TF Serving here at the end (export_dir/<version>/).",
    )
    f.DEFINE_integer("seed", d.seed, "Seed of initialisation, shuffling and augmentation.")
    f.DEFINE_bool(
        "deterministic",
        d.deterministic,
        "Enable TF op determinism (slower) so that a run is bit-reproducible from its seed.",
    )
    f.DEFINE_enum(
        "strategy",
        d.strategy,
        list(STRATEGIES),
        "Distribution strategy; 'auto' uses MirroredStrategy with several GPUs, else the default.",
    )
    f.DEFINE_string("tpu", d.tpu, "TPU name or address, for --strategy=tpu.")
    f.DEFINE_enum("mixed_precision", d.mixed_precision, list(PRECISIONS), "Keras dtype policy.")
    f.DEFINE_bool("jit_compile", d.jit_compile, "Compile the train step with XLA.")
    f.DEFINE_integer(
        "steps_per_execution",
        d.steps_per_execution,
        "Train steps per tf.function call (EMA updates are then compounded; see TargetEMA).",
    )
    f.DEFINE_integer(
        "accumulation_steps",
        d.accumulation_steps,
        "Micro-batches per optimiser step: --batch_size is the effective batch, each "
        "micro-batch has batch_size/accumulation_steps images (BN statistics per micro-batch).",
    )
    f.DEFINE_bool(
        "joint_views",
        d.joint_views,
        "Forward both views as one batch (BN statistics "
        "over both; faster, not the paper's setting).",
    )
    f.DEFINE_integer(
        "checkpoint_every_steps",
        d.checkpoint_every_steps,
        "Checkpoint interval in steps (0 = only at epoch ends).",
    )
    f.DEFINE_integer("keep_checkpoints", d.keep_checkpoints, "Number of checkpoints to keep.")
    f.DEFINE_integer(
        "knn_every_epochs",
        d.knn_every_epochs,
        "kNN monitor interval in epochs (0 = off); needs a labelled --eval_split.",
    )
    f.DEFINE_integer("knn_k", d.knn_k, "Neighbours of the kNN monitor.")
    f.DEFINE_integer(
        "knn_max_examples",
        d.knn_max_examples,
        "At most this many train examples form the kNN memory bank.",
    )
    f.DEFINE_float(
        "collapse_threshold",
        d.collapse_threshold,
        "Warn when the std of l2-normalised projections falls below this.",
    )
    f.DEFINE_integer(
        "collapse_patience", d.collapse_patience, "Stop after this many collapsed epochs in a row."
    )
    f.DEFINE_bool("skip_corrupt", d.skip_corrupt, "Skip unreadable images instead of failing.")
    f.DEFINE_integer("log_every_steps", d.log_every_steps, "TensorBoard scalar interval.")
    f.DEFINE_bool(
        "demo_baseline",
        d.demo_baseline,
        "At the end, also report the kNN accuracy of the same encoder at random initialisation.",
    )


def flags_parser(program):
    """An `app.run(main, flags_parser=...)` parser that reports a bad flag in one line.

    absl's default prints "FATAL Flags parsing error" and a help hint on two lines; this exits
    with `<program>: error: <what is wrong>` (unknown flag, bad value, unreadable flagfile).
    """

    def parse(argv):
        try:
            return flags.FLAGS(argv)
        except flags.Error as error:
            message = " ".join(str(error).removeprefix("ERROR:: ").split())
            raise SystemExit(f"{program}: error: {message}") from None

    return parse


def from_flags(values=None):
    """Builds a `TrainConfig` from parsed absl flags.

    Raises:
        ValueError: naming the first invalid flag.
    """
    values = values or flags.FLAGS
    kwargs = {}
    for field in dataclasses.fields(TrainConfig):
        value = values[field.name].value
        if isinstance(value, str) and value == "" and field.default is None:
            value = None
        kwargs[field.name] = value
    kwargs["augment"] = tuple(kwargs["augment"] or ())
    if kwargs["eval_split"] == "":
        kwargs["eval_split"] = None
    for key in ("model_dir", "data_dir", "manual_dir", "export_dir"):
        if kwargs[key]:
            kwargs[key] = os.path.expanduser(kwargs[key])
    return TrainConfig(**kwargs)
