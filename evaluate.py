"""Evaluation binary: `python evaluate.py --model_dir=runs/demo --protocol=knn|linear|finetune`."""

import json
import os
import sys
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from byol_tf import config  # noqa: E402
from byol_tf.config import TrainConfig  # noqa: E402

PROTOCOLS = ("linear", "knn", "finetune")
_TRAIN = TrainConfig()  # defaults of the flags shared with train.py
_UNUSED = " (The default shown is train.py's; evaluate.py does not use it.)"


def _define(kind, name, default, help_text):
    """Defines a flag unless train.py already has (tests import both binaries in one process).

    The shared flags (model_dir, dataset, data_dir, train_split, batch_size, epochs) take
    train.py's defaults, so the import order does not matter; `_given` tells a value that was
    set from a default.
    """
    if name not in flags.FLAGS:
        getattr(flags, f"DEFINE_{kind}")(name, default, help_text)


_define("string", "model_dir", _TRAIN.model_dir, "Training run (checkpoints/, run_config.json).")
_define("string", "protocol", "knn", f"Evaluation protocol: one of {', '.join(PROTOCOLS)}.")
_define("float", "label_fraction", 1.0, "Share of the train labels used (0.01, 0.1, 1.0).")
_define("string", "dataset", _TRAIN.dataset, "Data source; unless set, the run's." + _UNUSED)
_define("string", "data_dir", None, "tensorflow-datasets data directory; unless set, the run's.")
_define("string", "train_split", "train", "Labelled split the classifier is fitted on.")
_define("string", "test_split", None, "Split scored; unless set, the run's eval_split, else test.")
_define("integer", "batch_size", _TRAIN.batch_size, "Batch size of features and fine-tuning.")
_define("integer", "epochs", _TRAIN.epochs, "Unless set: linear 20, finetune 30." + _UNUSED)
_define("string", "saved_model", None, "Evaluate an exported SavedModel, not a checkpoint.")
_define("string", "output", None, "Results JSON; default <model_dir or .>/eval_<protocol>.json.")
FLAGS = flags.FLAGS


def _given(name):
    """The flag's value if set (command line, flagfile, flagsaver), else None."""
    flag = FLAGS[name]
    return None if flag.using_default_value else flag.value


def options():
    """The flags as a namespace; dataset, data_dir, test_split and epochs are None unless given."""
    names = ("protocol", "label_fraction", "train_split", "batch_size", "saved_model", "output")
    values = {name: FLAGS[name].value for name in names}
    for name in ("dataset", "data_dir", "test_split", "epochs"):
        values[name] = _given(name)
    # --saved_model alone evaluates the export, without the default training run folder.
    values["model_dir"] = _given("model_dir") if values["saved_model"] else FLAGS.model_dir
    return types.SimpleNamespace(**values)


def _run_config(model_dir):
    from byol_tf import run_dir

    return (run_dir.read_run_config(model_dir) if model_dir else None) or {}


def _check_flags(f):
    if f.protocol not in PROTOCOLS:
        raise ValueError(
            f"--protocol must be one of {', '.join(PROTOCOLS)}. Received: {f.protocol}"
        )
    if not 0 < f.label_fraction <= 1:
        raise ValueError(f"--label_fraction must be in (0, 1]. Received: {f.label_fraction}")
    if not (f.model_dir or f.saved_model):
        raise ValueError("pass --model_dir (a training run) or --saved_model (an export)")
    if f.protocol == "finetune" and f.saved_model:
        raise ValueError(
            "--protocol=finetune needs a checkpoint: pass --model_dir, not --saved_model"
        )
    for name in ("batch_size", "epochs"):
        if getattr(f, name) is not None and getattr(f, name) <= 0:
            raise ValueError(f"--{name} must be positive. Received: {getattr(f, name)}")


def _load_encoder(f):
    """`(encoder, image_size, where_from, export_metadata_or_None)` from the flags."""
    from byol_tf import checkpoints, export

    if f.saved_model:
        encode, metadata = export.load_exported(f.saved_model)
        return encode, int(metadata["image_size"]), f.saved_model, metadata
    path = checkpoints.latest_checkpoint(f.model_dir)
    if path is None:
        raise ValueError(f"No checkpoint found in {f.model_dir}/checkpoints (train first?)")
    model = checkpoints.load_checkpoint(path, compile=False)
    return model.encoder, int(model.image_shape[0]), path, None


def _datasets(f, run_config, image_size, metadata):
    """Train and test `eval_dataset`s and the description of where they come from."""
    from byol_tf import data

    dataset = f.dataset or run_config.get("dataset")
    if not dataset:
        raise ValueError(
            f"No run_config.json in {f.model_dir} to take the dataset from: pass --dataset"
        )
    stats = metadata or (run_config if f.dataset in (None, run_config.get("dataset")) else {})
    test_split = f.test_split or run_config.get("eval_split") or "test"
    kwargs = {
        "data_dir": f.data_dir or run_config.get("data_dir"),
        "mean": stats.get("mean"),
        "std": stats.get("std"),
    }
    if metadata:  # the export's own centre-crop, so features match what it serves
        kwargs["crop_fraction"] = metadata.get("crop_fraction")
    if run_config.get("manual_dir") and dataset == run_config.get("dataset"):
        kwargs["manual_dir"] = run_config["manual_dir"]
    train = data.eval_dataset(dataset, f.train_split, f.batch_size, image_size, **kwargs)
    test = data.eval_dataset(dataset, test_split, f.batch_size, image_size, **kwargs)
    source_info = data.source_info(
        dataset, f.train_split, kwargs["data_dir"], kwargs.get("manual_dir")
    )
    info = {"dataset": dataset, "train_split": f.train_split, "test_split": test_split}
    return train, test, dict(info, num_classes=source_info.num_classes)


def evaluate(f):
    """Runs the protocol the flags ask for; returns the results dict."""
    from byol_tf import evaluation

    run_config = _run_config(f.model_dir)
    encoder, image_size, source, metadata = _load_encoder(f)
    train, test, info = _datasets(f, run_config, image_size, metadata)
    results = {"protocol": f.protocol, "encoder": source, "image_size": image_size, **info}
    if f.protocol == "finetune":
        scores = evaluation.finetune(
            encoder, train, test, info["num_classes"], epochs=f.epochs or 30,
            label_fraction=f.label_fraction, batch_size=f.batch_size,
        )  # fmt: skip
        return {**results, **scores}
    train_x, train_y = evaluation.extract_features(encoder, train)
    test_x, test_y = evaluation.extract_features(encoder, test)
    if f.label_fraction < 1:
        keep = evaluation.subset_by_fraction(train_y, f.label_fraction)
        train_x, train_y = train_x[keep], train_y[keep]
    num_classes = max(info["num_classes"] or 0, int(max(train_y.max(), test_y.max()) + 1))
    if f.protocol == "knn":
        scores = evaluation.knn_classify(train_x, train_y, test_x, test_y, num_classes=num_classes)
    else:
        scores = evaluation.linear_eval(
            train_x, train_y, test_x, test_y, num_classes, epochs=f.epochs or 20
        )
    results.update(scores, label_fraction=f.label_fraction, num_train=len(train_y))
    return {**results, "num_test": len(test_y), "feature_dim": int(train_x.shape[1])}


def main(argv):
    """Evaluates, prints top-1 / top-5 and writes the results JSON."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    try:
        opts = options()
        _check_flags(opts)
        results = evaluate(opts)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"evaluate.py: error: {error}")
    except Exception as error:  # a corrupt image file met by the input pipeline
        from byol_tf import sources

        if not sources.unreadable_file(error):
            raise
        sys.exit(f"evaluate.py: error: Cannot decode image file {sources.unreadable_file(error)}")
    output = opts.output or os.path.join(opts.model_dir or ".", f"eval_{opts.protocol}.json")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w") as handle:
        json.dump(results, handle, indent=2)
    names = {"knn": "kNN (k=200, T=0.1)", "linear": "offline linear", "finetune": "fine-tune"}
    print(
        f"{names[opts.protocol]} on {results['dataset']}/{results['test_split']}: "
        f"top-1 {results['top1']:.2%}, top-5 {results['top5']:.2%} -> {output}"
    )
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=config.flags_parser("evaluate.py"))
