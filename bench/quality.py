"""kNN quality of byol_tf against byol-pytorch after the same short pretraining, on two data sets.

CIFAR-10 (the JPEG re-encoding) and Fashion-MNIST (the official IDX files, padded to 32 px and
copied to three channels): the same seeded training subset pretrains both libraries and is the
kNN memory bank; the test subset is scored by the same NumPy kNN for every encoder. With
`--knn_every_epochs N` each library's kNN is also scored every N epochs, and `--plot` saves the
curves (kNN against epoch, both libraries and both random initialisations) as a PNG. Each
library runs in its own process (bench/harness: its own threads, its peak memory, the load
average around its pretraining), and the report goes to bench/results/ (`--json_out`).
"""

import argparse
import dataclasses
import os
import sys

import harness
import quality_data

LIBRARIES = ("byol_tf", "byol_pytorch")
PYTORCH_SETTINGS = "Adam 3e-4, τ 0.99, its default augmentation"


def _data_flags(parser):
    parser.add_argument(
        "--datasets", nargs="+", default=list(quality_data.DATASETS),
        choices=quality_data.DATASETS,
    )  # fmt: skip
    parser.add_argument(
        "--data", default=quality_data.DEFAULT_DATA,
        help="CIFAR-10 JPEG tarball; relative paths start at the repo root",
    )  # fmt: skip
    parser.add_argument(
        "--fashion_mnist_dir", default=quality_data.DEFAULT_FASHION_MNIST,
        help="folder of the Fashion-MNIST IDX files; relative paths start at the repo root",
    )  # fmt: skip
    parser.add_argument(
        "--train_subset", type=int, default=5000,
        help="training images used for pretraining and as the kNN memory bank",
    )  # fmt: skip
    parser.add_argument("--test_subset", type=int, default=None, help="test images (all: 10000)")


def _run_flags(parser):
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--width_multiplier", type=float, default=0.25)
    parser.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=LIBRARIES)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--knn_k", type=int, default=200)
    parser.add_argument("--knn_temperature", type=float, default=0.1)
    parser.add_argument(
        "--knn_every_epochs", type=int, default=0,
        help="also score each pretrained encoder's kNN top-1 every N epochs (0: only at the "
        "end); that scoring counts in the reported pretraining time",
    )  # fmt: skip
    parser.add_argument(
        "--plot", default=None, help="save the kNN-against-epoch curves here (PNG; matplotlib)"
    )
    harness.add_report_flag(parser, "quality")


def _byol_tf_flags(parser):
    parser.add_argument(
        "--tf_recipe", default="auto", choices=["auto", "paper", "small_data", "short"],
        help="byol_tf recipe (byol_tf.training.recipes): 'auto' chooses by budget, as train.py",
    )  # fmt: skip
    parser.add_argument(
        "--tf_override", action="append", default=[], metavar="NAME=VALUE",
        help="byol_tf recipe setting to override (a byol_tf.training.recipes.Recipe field, e.g. "
        "learning_rate=3e-4 or tau_schedule=cosine); repeat the flag for several",
    )  # fmt: skip
    parser.add_argument(
        "--tf_crop_area", type=float, default=0.08,
        help="byol_tf views' smallest crop area, as a fraction of the image (paper: 0.08)",
    )  # fmt: skip
    parser.add_argument(
        "--tf_augment", action="append", default=[], metavar="NAME=VALUE",
        help="byol_tf view override, as train.py's --augment (e.g. jitter_prob=0.3 or "
        "view2_solarize_prob=0); repeat the flag for several",
    )  # fmt: skip
    parser.add_argument(
        "--tf_joint_views", action="store_true",
        help="byol_tf forwards both views as one batch (BatchNorm statistics over 2B images, "
        "as byol-pytorch does) instead of one pass per view (the paper)",
    )  # fmt: skip
    parser.add_argument(
        "--tf_per_batch_draws", action="store_true",
        help="measurement only: byol_tf draws one crop box and one set of colour, greyscale and "
        "solarisation decisions per batch and view (as torchvision transforms applied to a "
        "batch tensor do) instead of per image",
    )  # fmt: skip


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _data_flags(parser)
    _run_flags(parser)
    _byol_tf_flags(parser)
    args = parser.parse_args(argv)
    if not 0.0 < args.tf_crop_area <= 1.0:
        parser.error(f"--tf_crop_area must lie in (0, 1]; got {args.tf_crop_area}")
    return args


def tf_overrides(args):
    """byol_tf's view overrides from `--tf_crop_area` and `--tf_augment`, checked before any
    data is read (it imports TensorFlow here; the pretraining runs in processes of its own).

    Raises:
        SystemExit: with a one-line message for a malformed or out-of-range entry.
    """
    from byol_tf.settings.train_config import checked_augment

    overrides = {"crop_area": (args.tf_crop_area, 1.0)}
    try:
        overrides.update(checked_augment(args.tf_augment, "small", flag="--tf_augment"))
    except ValueError as error:
        sys.exit(f"error: {error}")
    return overrides


def tf_recipe(args, steps_per_epoch):
    """The byol_tf `Recipe` of `--tf_recipe` for this budget, with `--tf_override` applied.

    Raises:
        SystemExit: for an override that is not `name=value` of a recipe setting.
    """
    from byol_tf.training import recipes

    recipe = recipes.select(
        args.tf_recipe,
        total_steps=steps_per_epoch * args.epochs,
        steps_per_epoch=steps_per_epoch,
        num_examples=args.train_subset,
    )
    changes = {}
    for entry in args.tf_override:
        name, _, value = entry.partition("=")
        if name not in recipes.SETTINGS or not value:
            sys.exit(f"error: --tf_override must be name=value with a name among "
                     f"{', '.join(recipes.SETTINGS)}. Received: {entry}")  # fmt: skip
        current = getattr(recipe, name)
        if isinstance(current, bool):
            changes[name] = value.lower() in ("1", "true", "yes")
        else:
            changes[name] = type(current)(value)
    if changes:
        recipe = dataclasses.replace(recipe, name=f"{recipe.name}, overridden", **changes)
    return recipe


def _recipe_text(recipe, args):
    """One line describing the byol_tf settings: the recipe, then the views."""
    crops = "" if args.tf_crop_area == 0.08 else f", crop area >= {args.tf_crop_area:g}"
    extra = "".join(f", {entry}" for entry in args.tf_augment)
    joint = ", views forwarded jointly" if args.tf_joint_views else ""
    draws = "per-batch" if args.tf_per_batch_draws else "per-image"
    return f"{recipe.describe()}; 'small' preset views ({draws} draws){crops}{extra}{joint}"


def _installed(libraries):
    """Keeps the libraries whose packages are installed, and says why each other one is skipped."""
    import importlib.util

    kept = []
    for library in libraries:
        module = "tensorflow" if library == "byol_tf" else "byol_pytorch"
        if importlib.util.find_spec(module) is None:
            print(f"skipping {library}: `{module}` is not installed (see bench/README.md)")
        else:
            kept.append(library)
    return kept


def run_dataset(data, args, recipe):
    """Each library's random initialisation, pretraining and kNN on one data set, each library
    in its own process; its rows and the outcomes."""
    print(
        f"\n{data.name}: {len(data.train_x)} train images (pretraining set and kNN bank), "
        f"{len(data.test_x)} test images; ResNet-18 CIFAR stem, width x{args.width_multiplier}, "
        f"32 px; {args.epochs} epochs of batch {args.batch_size}; {args.threads} threads; "
        f"load average {harness.load_average()}",
        flush=True,
    )
    settings = dict(vars(args), recipe=recipe, tf_overrides=args.tf_overrides)
    env = dict(harness.thread_env(args.threads), PYTHONUNBUFFERED="1")
    env["TF_CPP_MIN_LOG_LEVEL"] = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")
    contenders = []
    for library in args.libraries:
        text = _recipe_text(recipe, args) if library == "byol_tf" else PYTORCH_SETTINGS
        print(f"{library} on {data.name}: {text}", flush=True)
        options = {"library": library, "data": data, "settings": settings, "description": text}
        contenders.append(harness.Contender(
            f"{data.name}/{library}", "quality_libraries:build", options, label=library, env=env,
        ))  # fmt: skip
    schedule = harness.Schedule(rounds=1, warmup=0, fresh_process_per_round=True)
    outcomes = harness.run(contenders, schedule)
    rows = [row for o in outcomes.values() for r in o.rounds for row in r["rows"]]
    baselines = [row for row in rows if row["pretraining"] == "none"]
    return baselines + [row for row in rows if row["pretraining"] != "none"], outcomes


def plot(rows, path):
    """kNN against epoch per data set: both libraries, their random initialisations at epoch 0."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed: no plot written to {path}")
        return
    datasets = list(dict.fromkeys(row["dataset"] for row in rows))
    figure, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4), squeeze=False)
    colours = {"byol_tf": "tab:orange", "byol_pytorch": "tab:blue"}
    for axis, name in zip(axes[0], datasets, strict=True):
        start = {r["library"]: r["knn_top1"] for r in rows
                 if r["dataset"] == name and r["pretraining"] == "none"}  # fmt: skip
        for row in rows:
            if row["dataset"] != name or row["pretraining"] == "none":
                continue
            library = row["library"]
            points = [(0, start.get(library))] if library in start else []
            points += [tuple(p) for p in row["curve"]]
            epochs, accuracy = zip(*points, strict=True)
            axis.plot(epochs, [100 * a for a in accuracy], "o-", color=colours[library],
                      label=library)  # fmt: skip
            if library in start:
                axis.axhline(100 * start[library], color=colours[library], linestyle=":",
                             label=f"{library} random init")  # fmt: skip
        axis.set_title(name)
        axis.set_xlabel("epoch")
        axis.set_ylabel("kNN top-1 (%)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    print(f"plot: {path}")


def _print_rows(rows, args):
    print(f"\n| data set | encoder | pretraining | time (s) | "
          f"kNN top-1 (k={args.knn_k}, T={args.knn_temperature}) |")  # fmt: skip
    print("|---|---|---|---:|---:|")
    for row in rows:
        print(f"| {row['dataset']} | {row['encoder']} | {row['pretraining']} | "
              f"{row['seconds']:.0f} | {100 * row['knn_top1']:.2f} % |")  # fmt: skip


def main(argv=None):
    args = parse_args(argv)
    args.libraries = _installed(args.libraries)
    if not args.libraries:
        sys.exit("neither byol_tf nor byol-pytorch can be imported")
    start = harness.environment()
    print(harness.describe_environment(start), flush=True)
    args.tf_overrides = tf_overrides(args) if "byol_tf" in args.libraries else {}
    rows, recipes, outcomes = [], {}, {}
    for name in args.datasets:
        data = quality_data.load(name, args)
        if data is None:
            continue
        recipe = None
        if "byol_tf" in args.libraries:
            recipe = recipes[name] = tf_recipe(args, len(data.train_x) // args.batch_size)
        found, done = run_dataset(data, args, recipe)
        rows += found
        outcomes.update(harness.outcomes_json(done))
    if not rows:
        return
    _print_rows(rows, args)
    if args.plot:
        plot(rows, args.plot)
    settings = dict(vars(args), recipes={k: r.to_json() for k, r in recipes.items()})
    for outcome in outcomes.values():
        outcome.pop("options")  # the data arrays; the settings are above
    report = {"args": settings, "results": rows, "outcomes": outcomes}
    harness.write_report("quality", report, args.json_out, start_env=start)


if __name__ == "__main__":
    main()
