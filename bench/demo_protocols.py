"""The demo's encoders under several evaluation protocols: which one shows what pretraining buys.

Scores, on the demo set (the Fashion-MNIST subset shipped in the package, 6,000 train / 1,000
test images), four encoders under each protocol: the trained encoder of a run folder (its latest
checkpoint), the same architecture at random initialisation (seeded as train.py's baseline), and
the raw pixels (normalised as the encoder sees them, and in [0, 1]). Protocols: weighted kNN
(docs/algorithm.md §6) on all train labels or on a class-balanced few-label subset (seeded,
several seeds averaged), and the linear probe of `byol_tf.evaluation.linear_eval` on the same
label sets. Prints one JSON line per protocol.

    python bench/demo_protocols.py --model_dir runs/demo --per_class 10 25 100 0 --linear
"""

import argparse
import json
import os

import harness  # noqa: F401  (puts the repository's byol_tf first on sys.path)


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model_dir", required=True)
    p.add_argument("--per_class", type=int, nargs="*", default=[10, 100, 0], help="0 = all")
    p.add_argument("--knn_k", type=int, nargs="*", default=[200, 20])
    p.add_argument("--seeds", type=int, default=3, help="few-label subsets averaged")
    p.add_argument("--linear", action="store_true", help="also the linear probe")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def _balanced(labels, per_class, seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(10)]
    return np.sort(np.concatenate(picks))


def main(argv=None):
    args = _parse(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    import keras
    import numpy as np

    from byol_tf import evaluation
    from byol_tf.core import networks
    from byol_tf.data import pipelines
    from byol_tf.runs import checkpoints
    from byol_tf.training import monitoring

    with open(os.path.join(args.model_dir, "run_config.json")) as f:
        run = json.load(f)
    size = run["image_size"]
    memory = pipelines.eval_dataset("demo", 256, size)
    queries = pipelines.eval_dataset(pipelines.sources.source("demo", "test"), 256, size)
    info = pipelines.source_info("demo")
    model = checkpoints.load_checkpoint(checkpoints.latest_checkpoint(args.model_dir), False)
    keras.utils.set_random_seed(run.get("seed", 0))
    random_init = networks.resnet(
        18, run["width_multiplier"], run["cifar_stem"], (size, size, 3),
        zero_init_residual=bool(run.get("zero_init_residual", True)),
    )  # fmt: skip
    encoders = {
        "trained": model.encoder,
        "random_init": random_init,
        "raw_pixels": monitoring.raw_pixels,
        "raw_pixels_unit": lambda x: monitoring.unit_pixels(x, info.mean, info.std),
    }
    features = {}
    for name, encoder in encoders.items():
        train_x, train_y = evaluation.extract_features(encoder, memory)
        test_x, test_y = evaluation.extract_features(encoder, queries)
        features[name] = (np.asarray(train_x), np.asarray(train_y), np.asarray(test_x),
                          np.asarray(test_y))  # fmt: skip
    labels = features["trained"][1]
    for per_class in args.per_class:
        seeds = range(args.seeds) if per_class else [0]
        subsets = [
            _balanced(labels, per_class, s) if per_class else np.arange(len(labels)) for s in seeds
        ]
        protocols = [(f"knn{k}", k) for k in args.knn_k]
        protocols += [("linear", None)] if args.linear else []
        for protocol, k in protocols:
            row = {"per_class": per_class, "protocol": protocol}
            for name, (train_x, train_y, test_x, test_y) in features.items():
                scores = []
                for keep in subsets:
                    if k is not None:
                        result = evaluation.knn_classify(
                            train_x[keep], train_y[keep], test_x, test_y, k=k
                        )
                    else:
                        result = evaluation.linear_eval(
                            train_x[keep], train_y[keep], test_x, test_y, 10,
                            validation_fraction=0.2,
                        )  # fmt: skip
                    scores.append(float(result["top1"]))
                row[name] = round(float(np.mean(scores)), 4)
            best_raw = max(row["raw_pixels"], row["raw_pixels_unit"])
            row["margin"] = round(row["trained"] - best_raw, 4)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
