"""Short-budget settings search: kNN of byol_tf encoders pretrained briefly on a small data set.

One run = one setting: pretrain on the demo set (Fashion-MNIST subset shipped in the package)
for a few epochs, score kNN (k = 200, cosine, exp(sim/0.1) votes; docs/algorithm.md §6) after
every `--knn_every` epochs, and print one JSON line with the trajectory, the baselines under the
same protocol (`byol_tf.training.monitoring.baseline_scores`: `raw_pixels`, the pixels normalised as
the
encoder sees them; `raw_pixels_unit`, the pixels in [0, 1]; `random_init`) and the pretraining
wall time; the same, with the machine it ran on, is written to bench/results/ (`--json_out`).
Pin each run to `--threads` threads to run several side by side.

    python bench/short_budget.py --optimizer adam --learning_rate 1e-3 --epochs 12
"""

import argparse
import json
import os
import time

import harness


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="demo")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--optimizer", choices=("lars", "adam", "adamw"), default="lars")
    p.add_argument("--learning_rate", type=float, default=0.3, help="per 256 images for LARS")
    p.add_argument("--weight_decay", type=float, default=1e-5)
    p.add_argument("--warmup_epochs", type=float, default=1.0)
    p.add_argument("--lr_schedule", choices=("cosine", "constant"), default="cosine")
    p.add_argument("--base_tau", type=float, default=0.996)
    p.add_argument("--tau_schedule", choices=("cosine", "constant"), default="cosine")
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--width_multiplier", type=float, default=0.25)
    p.add_argument("--cifar_stem", action="store_true")
    p.add_argument(
        "--zero_init_residual",
        action="store_true",
        help="start the last BatchNorm gamma of every residual block at 0 (official ResNet)",
    )
    p.add_argument("--image_size", type=int, default=28)
    p.add_argument("--projection_dim", type=int, default=128)
    p.add_argument("--hidden_dim", type=int, default=512)
    p.add_argument("--augment", nargs="*", default=["crop_area=0.7:1.0"])
    p.add_argument("--knn_every", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--predictor_lr_multiplier", type=float, default=1.0)
    p.add_argument("--tag", default="")
    harness.add_report_flag(p, "short_budget")
    return p.parse_args(argv)


def _knn(encoder, memory, queries):
    """kNN top-1 of `encoder`'s features (any callable from image batches to vectors)."""
    from byol_tf import evaluation

    bank_x, bank_y = evaluation.extract_features(encoder, memory)
    test_x, test_y = evaluation.extract_features(encoder, queries)
    return float(evaluation.knn_classify(bank_x, bank_y, test_x, test_y)["top1"])


def _trajectory_callback(every, epochs, score):
    """A Keras callback timing the epochs and scoring `score(encoder)` every `every` epochs."""
    import keras

    class Trajectory(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.train_s, self.points = 0.0, []

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.time()

        def on_epoch_end(self, epoch, logs=None):
            self.train_s += time.time() - self.started  # before scoring: not training time
            if (epoch + 1) % every == 0 or epoch + 1 == epochs:
                self.points.append((epoch + 1, round(score(self.model.encoder), 4)))
                print(json.dumps({"epoch": epoch + 1, "knn": self.points[-1][1],
                                  "train_s": round(self.train_s, 1)}), flush=True)  # fmt: skip

    return Trajectory()


def _optimizer(args, steps, total):
    """The optimiser of the run: LARS (rate per 256 images) or AdamW, on the chosen schedule,
    the predictor's rate multiplied by `--predictor_lr_multiplier`."""
    import byol_tf
    from byol_tf.core import optimizers

    warmup = min(int(round(args.warmup_epochs * steps)), total)
    lars = args.optimizer == "lars"
    peak = args.learning_rate * (args.batch_size / 256 if lars else 1.0)  # LARS: per 256 images
    if args.lr_schedule == "cosine":
        schedule = byol_tf.WarmupCosine(peak, total, warmup)
    else:
        schedule = byol_tf.WarmupConstant(peak, warmup)
    multipliers = optimizers.predictor_multiplier(args.predictor_lr_multiplier)
    if lars:
        return optimizers.LARS(
            schedule, weight_decay=args.weight_decay, eta=0.02,
            learning_rate_multipliers=multipliers,
        )  # fmt: skip
    # decoupled decay of every variable, as keras.optimizers.AdamW
    return optimizers.AdamW(
        schedule, weight_decay=args.weight_decay, exclude_from_weight_decay=None,
        learning_rate_multipliers=multipliers,
    )  # fmt: skip


def _encoder_factory(args):
    """A function building the run's (seeded by the global seed) encoder."""
    from byol_tf.core import networks

    depth = int(args.encoder.removeprefix("resnet"))
    shape = (args.image_size, args.image_size, 3)

    def encoder():
        return networks.resnet(
            depth, args.width_multiplier, args.cifar_stem, shape,
            zero_init_residual=args.zero_init_residual,
        )  # fmt: skip

    return encoder


def _pretrain(args, encoder, steps, score):
    """Pretrains BYOL on the views of `--dataset`; the kNN trajectory and the training time."""
    import byol_tf
    from byol_tf.data import pipelines
    from byol_tf.settings import train_config

    total = steps * args.epochs
    overrides = train_config.parse_augment(args.augment, "--augment")
    views = pipelines.pretrain_dataset(
        args.dataset, args.batch_size, args.image_size, seed=args.seed,
        augment_overrides=overrides, with_labels=False,
    )  # fmt: skip
    model = byol_tf.BYOL(encoder(), args.projection_dim, args.hidden_dim)
    model.compile(optimizer=_optimizer(args, steps, total))
    ema = byol_tf.TargetEMA(args.base_tau, total_steps=total, schedule=args.tau_schedule)
    probe = _trajectory_callback(args.knn_every, args.epochs, score)
    model.fit(views, epochs=args.epochs, steps_per_epoch=steps, callbacks=[ema, probe], verbose=0)
    return probe.points, probe.train_s


def main(argv=None):
    args = _parse(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    start = harness.environment()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    import keras

    from byol_tf.data import pipelines
    from byol_tf.training import monitoring

    keras.utils.set_random_seed(args.seed)
    memory = pipelines.eval_dataset(args.dataset, 256, args.image_size)
    test = pipelines.sources.source(args.dataset, "test")
    queries = pipelines.eval_dataset(test, 256, args.image_size)

    def score(encoder):
        return _knn(encoder, memory, queries)

    info = pipelines.source_info(args.dataset)
    encoder = _encoder_factory(args)
    # raw_pixels, raw_pixels_unit, random_init: the same protocol on encoders that cost nothing
    baselines = monitoring.baseline_scores(score, info.mean, info.std, encoder)
    keras.utils.set_random_seed(args.seed)
    steps = pipelines.steps_per_epoch(args.dataset, args.batch_size)
    trajectory, train_time = _pretrain(args, encoder, steps, score)
    result = {
        "tag": args.tag, "settings": vars(args), **baselines, "trajectory": trajectory,
        "final": trajectory[-1][1], "train_s": round(train_time, 1),
        "load_average": harness.load_average(),
    }  # fmt: skip
    print(json.dumps(result), flush=True)
    harness.write_report("short_budget", result, args.json_out, start_env=start)


if __name__ == "__main__":
    main()
