"""Evaluation of a pretrained encoder: `byol-evaluate --model_dir=runs/demo --protocol=knn`."""

import json
import os
import sys

from byol_tf import cli, config, program_settings, protocols, run_dir

config.define_flags(program_settings.EvalConfig)
FLAGS = config.FLAGS
_NAMES = {
    "knn": protocols.knn_description(),
    "linear": "offline linear",
    "linear_official": "linear (paper protocol)",
    "finetune": "fine-tune",
}
# The protocol whose training images are random-resized crops of the short-side square.
_CROPPING = ("finetune",)


def _note(line):
    """Prints a note on stderr (the one of the moment: tests capture it)."""
    print(line, file=sys.stderr)


def _run_config(model_dir):
    return (run_dir.read_run_config(model_dir) if model_dir else None) or {}


def _load_encoder(f):
    """`(encoder, image_size, where_from, export_metadata_or_None)` from the flags."""
    from byol_tf import checkpoints, export

    if f.saved_model:
        encode, metadata = export.load_exported(f.saved_model)
        return encode, int(metadata["image_size"]), f.saved_model, metadata
    # A damaged newest checkpoint is named on stderr and the newest readable one used.
    path = f.checkpoint or checkpoints.latest_readable(f.model_dir, _note)
    if path is None:
        raise ValueError(f"No checkpoint found in {f.model_dir}/checkpoints (train first?)")
    model = checkpoints.load_checkpoint(path, compile=False)
    return model.encoder, int(model.image_shape[0]), path, None


def _data(f, run_config):
    """`(dataset, test_split, data_dir, manual_dir)`: the flags', else the run's."""
    dataset = f.dataset or run_config.get("dataset")
    if not dataset:
        raise ValueError(
            f"No run_config.json in {f.model_dir} to take the dataset from: pass --dataset"
        )
    test_split = f.test_split or run_config.get("eval_split") or "test"
    same = dataset == run_config.get("dataset")
    manual_dir = run_config.get("manual_dir") if same else None
    return dataset, test_split, f.data_dir or run_config.get("data_dir"), manual_dir


def _check_splits(f, run_config):
    """Refuses splits that cannot serve a labelled evaluation (`splits.evaluation_problem`)."""
    from byol_tf import splits

    if not (f.dataset or run_config.get("dataset")):
        return  # `_datasets` says so, once the checkpoint is found
    dataset, test_split, data_dir, manual_dir = _data(f, run_config)
    problem = splits.evaluation_problem(dataset, f.train_split, test_split, data_dir, manual_dir)
    if problem is None:
        return
    split, reason = problem
    origin = "" if f.test_split or not run_config.get("eval_split") else ", the run's --eval_split"
    advice = "; name a labelled split disjoint from --train_split with --test_split"
    raise ValueError(
        f"Cannot evaluate on --dataset={dataset} (--train_split={f.train_split}, "
        f"--test_split={test_split}{origin}): {reason}{advice if split == 'test' else ''}."
    )


def _datasets(f, run_config, image_size, metadata):
    """Train and test `eval_dataset`s and the description of where they come from.

    Test images (and train images for feature protocols) are centre cropped, for
    linear_official in the official order (crop, then resize without antialiasing). Its train
    images are the whole decoded images one by one, the crops' source; fine-tuning's are the
    short-side square at the side the centre crop resizes to (256 px for 224 px views).
    """
    from byol_tf import data, image_ops

    dataset, test_split, data_dir, manual_dir = _data(f, run_config)
    # The encoder's own normalisation, whatever data it is scored on: the export's, else the
    # run's (the statistics of its training data), as the export of that checkpoint applies.
    stats = metadata or run_config
    if not stats.get("mean"):
        _note(
            f"No {run_dir.RUN_CONFIG} beside the checkpoint to take the encoder's normalisation "
            f"from: normalising with {dataset}'s statistics."
        )
    kwargs = {"data_dir": data_dir, "mean": stats.get("mean"), "std": stats.get("std")}
    if metadata:  # the export's own centre-crop, so features match what it serves
        kwargs["crop_fraction"] = metadata.get("crop_fraction")
    if manual_dir:
        kwargs["manual_dir"] = manual_dir
    crop_stats = {}  # linear_official normalises its crops itself, as the test images
    if f.protocol == "linear_official":
        train, train_info = data.whole_images(
            dataset, f.train_split, data_dir=data_dir, manual_dir=manual_dir,
            mean=kwargs["mean"], std=kwargs["std"],
        )  # fmt: skip
        crop_stats = {"mean": list(train_info.mean), "std": list(train_info.std)}
    elif f.protocol in _CROPPING:
        fraction = kwargs.get("crop_fraction") or image_ops.default_crop_fraction(image_size)
        whole = dict(kwargs, crop_fraction=1.0)
        side = round(image_size / fraction)
        train = data.eval_dataset(dataset, f.train_split, f.batch_size, side, **whole)
    else:
        train = data.eval_dataset(dataset, f.train_split, f.batch_size, image_size, **kwargs)
    official = f.protocol == "linear_official"
    test = data.eval_dataset(
        dataset, test_split, f.batch_size, image_size, official_crop=official, **kwargs
    )
    source_info = data.source_info(
        dataset, f.train_split, kwargs["data_dir"], kwargs.get("manual_dir")
    )
    info = {"dataset": dataset, "train_split": f.train_split, "test_split": test_split}
    return train, test, dict(info, num_classes=source_info.num_classes, **crop_stats)


def _linear_official(f, encoder, train, test, image_size, info, metadata):
    """linear_official with --linear_preset's budget, unless --epochs / --batch_size are set."""
    from byol_tf.evaluation import linear_official

    preset = linear_official.preset_budget(f.linear_preset, f.linear_selection)
    epochs = f.epochs or preset["epochs"]  # --epochs is None unless set
    explicit_batch = "batch_size" in f.explicit
    batch_size = f.batch_size if explicit_batch else preset["batch_size"] or f.batch_size
    scores = linear_official.linear_eval_official(
        encoder, train, test, info["num_classes"], image_size=image_size,
        mean=info["mean"], std=info["std"], selection=f.linear_selection, epochs=epochs,
        batch_size=batch_size, label_fraction=f.label_fraction,
        crop_fraction=(metadata or {}).get("crop_fraction"),
    )  # fmt: skip
    return {"linear_preset": f.linear_preset, **scores}


def evaluate(f):
    """Runs the protocol the flags ask for; returns the results dict."""
    from byol_tf import evaluation

    run_config = _run_config(f.model_dir)
    _check_splits(f, run_config)  # before the encoder is loaded: a refusal comes at once
    encoder, image_size, source, metadata = _load_encoder(f)
    train, test, info = _datasets(f, run_config, image_size, metadata)
    results = {"protocol": f.protocol, "encoder": source, "image_size": image_size, **info}
    if f.protocol == "finetune":
        scores = evaluation.finetune(
            encoder, train, test, info["num_classes"], epochs=f.epochs or 30,
            label_fraction=f.label_fraction, batch_size=f.batch_size,
        )  # fmt: skip
        return {**results, **scores}
    if f.protocol == "linear_official":
        return {**results, **_linear_official(f, encoder, train, test, image_size, info, metadata)}
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
    cli.check_no_arguments(argv)
    try:
        opts = config.from_flags(FLAGS, program_settings.EvalConfig)
        output = _output(opts)  # checked before the evaluation, which may take hours
        results = evaluate(opts)
        _write(output, results)
    except (ValueError, FileNotFoundError) as error:
        cli.fail(argv, error)
    except Exception as error:  # a corrupt image file met by the input pipeline
        cli.exit_if_unreadable_image(argv, error)
        raise
    print(f"{_description(opts.protocol, results)} on {results['dataset']}/"
          f"{results['test_split']}: top-1 {results['top1']:.2%}, top-5 {results['top5']:.2%} "
          f"-> {output}")  # fmt: skip
    return 0


def _description(protocol, results):
    """The protocol's name; kNN's with the k it used (at most the train examples there are)."""
    if protocol != "knn":
        return _NAMES[protocol]
    k, default = results["k"], protocols.KNN_NEIGHBOURS
    description = protocols.knn_description(k, results["temperature"])
    if k < default:
        clipped = f"; k={default} clipped to the {results['num_train']} train examples)"
        description = description[:-1] + clipped
    return description


def _output(opts):
    """The results file: --output, else beside what is evaluated (the run folder, else the
    export or checkpoint; never the current directory), checked to be writable."""
    if opts.output:
        return _check_writable(opts.output, f"--output={opts.output}")
    folder = opts.model_dir or opts.saved_model or os.path.dirname(opts.checkpoint)
    output = os.path.join(folder, f"eval_{opts.protocol}.json")
    flag = "--model_dir" if opts.model_dir else "--saved_model" if opts.saved_model else ""
    where = f"{flag}={folder}" if flag else f"the folder of --checkpoint={opts.checkpoint}"
    return _check_writable(output, f"The results file {output} (in {where})", "; pass --output")


def _check_writable(path, name, advice=""):
    """`path` when a file can be written there (nothing is created now); else ValueError."""
    if os.path.isdir(path):
        raise ValueError(f"{name} is a folder; expected the path of a JSON file to write{advice}")
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(folder):  # written with its missing folders
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise ValueError(f"{name} cannot be written: {folder} is a file, not a folder{advice}")
    target = path if os.path.exists(path) else folder
    if not os.access(target, os.W_OK):
        raise ValueError(f"{name} cannot be written: {target} is not writable{advice}")
    return path


def _write(output, results):
    """Writes the results JSON, creating its folder."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        with open(output, "w") as handle:
            json.dump(results, handle, indent=2)
    except OSError as error:  # lost between the check and now (disk full, permission)
        raise ValueError(f"Cannot write {output}: {run_dir.reason(error)}") from None


def run(program="byol-evaluate"):
    """The `byol-evaluate` console script; `python evaluate.py` runs it as `evaluate.py`."""
    cli.run(main, program, program_settings.EvalConfig)
