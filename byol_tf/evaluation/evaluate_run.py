"""A whole evaluation of a pretrained encoder from an `EvalConfig`: the encoder (a run's
checkpoint, one `.keras` file or an export), the labelled splits, the protocol, and the results.

`evaluate(cfg)` is to `byol-evaluate` what `byol_tf.training.train_run.train(cfg)` is to
`byol-train`: the program parses flags and writes the results; this module does the work.
"""

import sys

from byol_tf.data import pipelines, sources, splits
from byol_tf.evaluation import linear_official
from byol_tf.evaluation.features import extract_features, subset_by_fraction
from byol_tf.evaluation.finetune import finetune
from byol_tf.evaluation.knn import knn_classify
from byol_tf.evaluation.linear import linear_eval
from byol_tf.runs import checkpoints, run_folder
from byol_tf.serving import export
from byol_tf.views import image_ops

# The protocol whose training images are random-resized crops of the short-side square.
_CROPPING = ("finetune",)


def _note(line):
    """Prints a note on stderr (the one of the moment: tests capture it)."""
    print(line, file=sys.stderr)


def _run_config(model_dir):
    return (run_folder.read_run_config(model_dir) if model_dir else None) or {}


def _load_encoder(f):
    """`(encoder, image_size, where_from, export_metadata_or_None)` from the flags."""
    if f.saved_model:
        encode, metadata = export.load_exported(f.saved_model)
        return encode, int(metadata["image_size"]), f.saved_model, metadata
    # A damaged newest checkpoint is named on stderr and the newest readable one used.
    path = f.checkpoint or checkpoints.latest_readable(f.model_dir, _note)
    if path is None:
        raise ValueError(f"No checkpoint found in {f.model_dir}/checkpoints (train first?)")
    model = checkpoints.load_checkpoint(path, compile=False)
    return model.encoder, int(model.image_shape[0]), path, None


def _dataset(f, run_config):
    """`--dataset`, else the run's."""
    return f.dataset or run_config.get("dataset")


def _splits(f, run_config):
    """`(train, test)`: the two splits as `Source`s, from the flags, else the run's
    (`--dataset`, its `--data_dir` and `--manual_dir`); None when no dataset is named."""
    dataset = _dataset(f, run_config)
    if not dataset:
        return None
    test_split = f.test_split or run_config.get("eval_split") or "test"
    same = dataset == run_config.get("dataset")
    where = {
        "data_dir": f.data_dir or run_config.get("data_dir"),
        "manual_dir": (run_config.get("manual_dir") if same else None) or None,
    }
    return sources.source(dataset, f.train_split, **where), sources.source(
        dataset, test_split, **where
    )


def _check_splits(f, run_config, pair):
    """Refuses splits that cannot serve a labelled evaluation (`splits.evaluation_problem`)."""
    if pair is None:
        return  # `evaluate` says so, once the checkpoint is found
    problem = splits.evaluation_problem(*pair)
    if problem is None:
        return
    split, reason = problem
    origin = "" if f.test_split or not run_config.get("eval_split") else ", the run's --eval_split"
    advice = "; name a labelled split disjoint from --train_split with --test_split"
    raise ValueError(
        f"Cannot evaluate on --dataset={_dataset(f, run_config)} (--train_split={f.train_split}, "
        f"--test_split={pair[1].split}{origin}): {reason}{advice if split == 'test' else ''}."
    )


def _datasets(f, run_config, pair, image_size, metadata):
    """Train and test `eval_dataset`s, the description of where they come from, and the
    training split (a `Source`, with the encoder's normalisation).

    Test images (and train images for feature protocols) are centre cropped, for
    linear_official in the official order (crop, then resize without antialiasing). Its train
    images are the whole decoded images one by one, the crops' source; fine-tuning's are the
    short-side square at the side the centre crop resizes to (256 px for 224 px views).
    """
    # The encoder's own normalisation, whatever data it is scored on: the export's, else the
    # run's (the statistics of its training data), as the export of that checkpoint applies.
    stats = metadata or run_config
    if not stats.get("mean"):
        _note(
            f"No {run_folder.RUN_CONFIG} beside the checkpoint to take the encoder's normalisation "
            f"from: normalising with {_dataset(f, run_config)}'s statistics."
        )
    normalised = {"mean": stats.get("mean") or None, "std": stats.get("std") or None}
    train, test = (sources.source(split, **normalised) for split in pair)
    # The export's own centre-crop, so features match what it serves.
    crop = {"crop_fraction": metadata.get("crop_fraction")} if metadata else {}
    crop_stats = {}  # linear_official normalises its crops itself, as the test images
    if f.protocol == "linear_official":
        train_data, train_info = pipelines.whole_images(train)
        crop_stats = {"mean": list(train_info.mean), "std": list(train_info.std)}
    elif f.protocol in _CROPPING:
        fraction = crop.get("crop_fraction") or image_ops.default_crop_fraction(image_size)
        side = round(image_size / fraction)
        train_data = pipelines.eval_dataset(train, f.batch_size, side, crop_fraction=1.0)
    else:
        train_data = pipelines.eval_dataset(train, f.batch_size, image_size, **crop)
    official = f.protocol == "linear_official"
    test_data = pipelines.eval_dataset(
        test, f.batch_size, image_size, official_crop=official, **crop
    )
    info = {"dataset": _dataset(f, run_config), "train_split": train.split}
    info.update(test_split=test.split, num_classes=train.info.num_classes, **crop_stats)
    return train_data, test_data, info, train


def _linear_official(f, encoder, train, test, image_size, train_split, metadata):
    """linear_official with --linear_preset's budget, unless --epochs / --batch_size are set."""
    preset = linear_official.preset_budget(f.linear_preset, f.linear_selection)
    epochs = f.epochs or preset["epochs"]  # --epochs is None unless set
    explicit_batch = "batch_size" in f.explicit
    batch_size = f.batch_size if explicit_batch else preset["batch_size"] or f.batch_size
    scores = linear_official.linear_eval_official(
        encoder, train, test, train_split, image_size=image_size,
        selection=f.linear_selection, epochs=epochs,
        batch_size=batch_size, label_fraction=f.label_fraction,
        crop_fraction=(metadata or {}).get("crop_fraction"),
    )  # fmt: skip
    return {"linear_preset": f.linear_preset, **scores}


def evaluate(f) -> dict:
    """Runs the protocol `f` (an `EvalConfig`) asks for; returns the results dict.

    Raises:
        ValueError: for a setting that cannot be honoured, in one line naming its flag.
        FileNotFoundError: for a missing encoder or data file, naming it.
    """
    run_config = _run_config(f.model_dir)
    pair = _splits(f, run_config)
    _check_splits(f, run_config, pair)  # before the encoder is loaded: a refusal comes at once
    encoder, image_size, source, metadata = _load_encoder(f)
    if pair is None:
        raise ValueError(
            f"No run_config.json in {f.model_dir} to take the dataset from: pass --dataset"
        )
    train, test, info, train_split = _datasets(f, run_config, pair, image_size, metadata)
    results = {"protocol": f.protocol, "encoder": source, "image_size": image_size, **info}
    if f.protocol == "finetune":
        scores = finetune(
            encoder, train, test, info["num_classes"], epochs=f.epochs or 30,
            label_fraction=f.label_fraction, batch_size=f.batch_size,
        )  # fmt: skip
        return {**results, **scores}
    if f.protocol == "linear_official":
        scores = _linear_official(f, encoder, train, test, image_size, train_split, metadata)
        return {**results, **scores}
    train_x, train_y = extract_features(encoder, train)
    test_x, test_y = extract_features(encoder, test)
    if f.label_fraction < 1:
        keep = subset_by_fraction(train_y, f.label_fraction)
        train_x, train_y = train_x[keep], train_y[keep]
    num_classes = max(info["num_classes"] or 0, int(max(train_y.max(), test_y.max()) + 1))
    if f.protocol == "knn":
        scores = knn_classify(train_x, train_y, test_x, test_y, num_classes=num_classes)
    else:
        scores = linear_eval(train_x, train_y, test_x, test_y, num_classes, epochs=f.epochs or 20)
    results.update(scores, label_fraction=f.label_fraction, num_train=len(train_y))
    return {**results, "num_test": len(test_y), "feature_dim": int(train_x.shape[1])}
