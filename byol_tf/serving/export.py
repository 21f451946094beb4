"""SavedModel export of an encoder for TF Serving, and loading an export back (`byol-export`
and `python -m byol_tf.cli.export` export a run's checkpoint)."""

import json
import os
import shutil
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from byol_tf.runs import checkpoints, run_folder
from byol_tf.settings.choices import SERVING_PREPROCESSINGS
from byol_tf.views import eval_crops, image_ops

METADATA_FILE = "byol_tf_export.json"
# What `serving_default` and `classify` do to raw pixels before normalising (docs/serving.md):
# "resize_center_crop": the short side resized (bicubic, antialiased) to image_size /
# crop_fraction, then the centre square cut, as `byol_tf.data.pipelines.eval_dataset` by default
# (byol_tf's kNN monitor and its linear, knn and finetune protocols); "official_center_crop": the
# centre square of crop_fraction of the short side cut, then resized bicubic without
# antialiasing, as the official evaluation (`byol/utils/dataset.py`) and `linear_official`'s test
# images.
RESIZE_CENTER_CROP, OFFICIAL_CENTER_CROP = SERVING_PREPROCESSINGS


class EncoderModule(tf.Module):
    """The encoder with its preprocessing, as the `tf.Module` that `export_encoder` saves.

    `serve(images)`: uint8 `[batch, height, width, 3]` of any size → `{"representation"}`;
    the centre square is taken as `preprocessing` says (`RESIZE_CENTER_CROP`: the short side
    resized, bicubic with antialiasing, to `image_size / crop_fraction`, then the centre square
    cut, as `byol_tf.data.pipelines.eval_dataset`; `OFFICIAL_CENTER_CROP`: the centre square of
    `crop_fraction` of the short side cut, then resized bicubic without antialiasing, as the
    official evaluation), scaled to [0, 1] and normalised with `mean` / `std`.
    `encode_normalized(images)`: float32, already preprocessed
    `[batch, image_size, image_size, 3]` → `{"representation"}`. With a `classifier` (a
    Keras layer on the representation, e.g. the online probe), `classify(images)` takes what
    `serve` takes and returns `{"logits", "classes"}` as well as the representation.
    """

    def __init__(
        self,
        encoder,
        image_size,
        mean,
        std,
        crop_fraction=None,
        classifier=None,
        preprocessing=RESIZE_CENTER_CROP,
    ) -> None:
        super().__init__(name="byol_encoder")
        if preprocessing not in SERVING_PREPROCESSINGS:
            raise ValueError(
                f"preprocessing must be one of {SERVING_PREPROCESSINGS}. "
                f"Received: preprocessing={preprocessing!r}"
            )
        self.encoder = encoder
        self.classifier = classifier
        self.preprocessing = preprocessing
        self.image_size = int(image_size)
        self.crop_fraction = float(
            crop_fraction or image_ops.default_crop_fraction(self.image_size)
        )
        self.mean = tf.constant(mean, tf.float32)
        self.std = tf.constant(std, tf.float32)
        self.serve = tf.function(
            self._serve,
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")],
        )
        size = self.image_size
        self.encode_normalized = tf.function(
            self._encode_normalized,
            input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="images")],
        )
        if classifier is not None:
            self.classify = tf.function(
                self._classify,
                input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")],
            )

    def _classify(self, images):
        outputs = self._serve(images)
        logits = tf.cast(self.classifier(outputs["representation"]), tf.float32)
        classes = tf.argmax(logits, axis=-1, output_type=tf.int32)
        return dict(outputs, logits=logits, classes=classes)

    def _encode_normalized(self, images):
        # A SavedModel's signature does not check the sides of what it is given: refuse
        # images of another size here, naming the expected shape.
        size = self.image_size
        return self._encode(tf.ensure_shape(images, [None, size, size, 3], name="images"))

    def _encode(self, images):
        count = tf.shape(images)[0]
        # Inference mode: BatchNorm uses its moving statistics, whatever the batch.
        features = self.encoder(self._never_empty(images), training=False)
        return {"representation": tf.cast(features[:count], tf.float32)}

    def _never_empty(self, images):
        """`images`, or one black image in place of an empty batch.

        TensorFlow's convolutions fail on a batch of 0 images; the caller keeps the first
        `count` rows of the features, so an empty request gets `[0, D]`.
        """
        size = self.image_size
        blank = tf.zeros([1, size, size, 3], images.dtype)
        return tf.cond(tf.shape(images)[0] > 0, lambda: images, lambda: blank)

    def _serve(self, images):
        # The signature checks only the last dimension; name the rank error clearly here.
        images = tf.ensure_shape(images, [None, None, None, 3], name="images_batch_h_w_3")
        count = tf.shape(images)[0]
        images = self._never_empty(images)
        if self.preprocessing == OFFICIAL_CENTER_CROP:
            # Crop, resize without antialiasing, / 255, clip to [0, 1] (eval_preprocess).
            images = eval_crops.official_center_crop(images, self.image_size, self.crop_fraction)
        else:
            images = image_ops.resize_center_crop(images, self.image_size, self.crop_fraction)
            images = tf.clip_by_value(images / 255.0, 0.0, 1.0)
        return self._encode(image_ops.normalize(images, self.mean, self.std)[:count])


def _check_stats(name, value):
    values = np.asarray(value, np.float64).reshape(-1) if value is not None else np.array([])
    if values.shape == (1,):
        values = np.repeat(values, 3)
    if values.shape != (3,) or not np.all(np.isfinite(values)):
        raise ValueError(f"{name} must be 3 per-channel numbers. Received: {name}={value!r}")
    if name == "std" and np.any(values <= 0):
        raise ValueError(f"std must be positive. Received: std={value!r}")
    return tuple(float(v) for v in values)


def next_version(export_dir) -> int:
    """1 + the largest numeric subfolder of `export_dir` (1 when there is none)."""
    if not os.path.isdir(export_dir):
        return 1
    versions = [int(n) for n in os.listdir(export_dir) if n.isdigit()]
    return max(versions, default=0) + 1


def export_encoder(
    encoder,
    export_dir,
    image_size,
    mean,
    std,
    version=None,
    crop_fraction=None,
    classifier=None,
    preprocessing=RESIZE_CENTER_CROP,
) -> str:
    """Writes the encoder as a TensorFlow Serving SavedModel in `export_dir/<version>/`.

    Signatures: `serving_default` takes `images`, uint8 `[batch, height, width, 3]` (RGB; any
    height and width, one size per request) and returns `{"representation": float32
    [batch, D]}`, cropping, resizing and normalising inside the graph (as `preprocessing`
    says) so clients send raw pixels; `encode_normalized` takes float32 `[batch, image_size,
    image_size, 3]` images already preprocessed. `byol_tf_export.json` beside the model records
    image_size, preprocessing, crop_fraction, mean, std, feature_dim and the version of
    byol_tf. The version is written under a temporary name and renamed, so a model server
    watching `export_dir` never sees half a model.

    Args:
        encoder: a `keras.Model` mapping `[B, image_size, image_size, 3]` to `[B, D]`.
        export_dir: the model's base folder (TF Serving's `--model_base_path`).
        image_size: side of the encoder's input images.
        mean: per-channel normalisation mean in [0, 1] units (3 numbers, or 1 for all).
        std: per-channel normalisation std.
        version: positive int; default the next one after the existing numeric subfolders.
        crop_fraction: centre-crop fraction; default 0.875 above 64 px, else 1.0.
        classifier: a Keras layer mapping representations to class logits; adds the
            `classify` signature (uint8 images → `{"representation", "logits", "classes"}`).
        preprocessing: how `serving_default` and `classify` take the centre square:
            `RESIZE_CENTER_CROP` ("resize_center_crop", default: resize with antialiasing,
            then crop, as `byol_tf.data.pipelines.eval_dataset`) or `OFFICIAL_CENTER_CROP`
            ("official_center_crop": crop, then resize without antialiasing, as the official
            evaluation; `byol_tf.official.importer` exports imported networks so).

    Returns:
        The path of the written version folder.

    Raises:
        ValueError: for a bad argument or an existing version, naming it.
        WriteError: (`byol_tf.runs.run_folder`) when writing fails (disk full, permission
            lost), naming the version folder and the reason; nothing is left under
            `export_dir`.
    """
    if not isinstance(encoder, keras.Model):
        raise ValueError(f"encoder must be a keras.Model. Received: {type(encoder).__name__}")
    if not isinstance(image_size, (int, np.integer)) or image_size <= 0:
        raise ValueError(f"image_size must be a positive int. Received: image_size={image_size!r}")
    mean, std = _check_stats("mean", mean), _check_stats("std", std)
    version = next_version(export_dir) if version is None else version
    if not isinstance(version, (int, np.integer)) or version <= 0:
        raise ValueError(f"version must be a positive int. Received: version={version!r}")
    path = os.path.join(export_dir, str(int(version)))
    if os.path.exists(path):
        raise ValueError(f"version {version} already exists in {export_dir}; pick another")
    module = EncoderModule(encoder, image_size, mean, std, crop_fraction, classifier, preprocessing)
    probe = tf.zeros([1, image_size, image_size, 3])
    representation = module.encode_normalized(probe)["representation"]
    if representation.shape.rank != 2:  # a feature map: the encoder does not pool
        raise ValueError(
            f"encoder {encoder.name!r} outputs shape {tuple(representation.shape)} for images "
            f"of shape {tuple(probe.shape)}; an export serves features of rank 2, [batch, D] "
            "(end the encoder with a global pooling, e.g. keras.layers.GlobalAveragePooling2D)"
        )
    feature_dim = int(representation.shape[-1])
    metadata = {
        "image_size": int(image_size),
        "preprocessing": module.preprocessing,
        "crop_fraction": module.crop_fraction,
        "mean": list(mean),
        "std": list(std),
        "feature_dim": feature_dim,
        "byol_tf_version": _version(),
    }
    if classifier is not None:
        metadata["num_classes"] = int(module.classifier(representation).shape[-1])
    tmp = os.path.join(export_dir, f".tmp-{int(version)}-{os.getpid()}")
    # TensorFlow writes the variables with its own file system, which raises OpError.
    with run_folder.writing("write the export", path, (OSError, tf.errors.OpError)):
        try:
            _write_version(module, tmp, path, metadata)
        except (OSError, tf.errors.OpError):
            shutil.rmtree(tmp, ignore_errors=True)  # frees the space the partial export took
            raise
    return path


def _write_version(module, tmp, path, metadata):
    """Saves `module` and `metadata` in the folder `tmp`, then renames it to `path`."""
    os.makedirs(os.path.dirname(tmp), exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    signatures = {"serving_default": module.serve, "encode_normalized": module.encode_normalized}
    if module.classifier is not None:
        signatures["classify"] = module.classify
    tf.saved_model.save(module, tmp, signatures=signatures)
    with open(os.path.join(tmp, METADATA_FILE), "w") as handle:
        json.dump(metadata, handle, indent=2)
    os.replace(tmp, path)


def _version():
    import byol_tf

    return byol_tf.__version__


def _check_graph(path):
    """Raises a one-line `ValueError` if `path` (a `saved_model.pb`) holds no SavedModel graph."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    graph = saved_model_pb2.SavedModel()
    try:
        with open(path, "rb") as handle:
            graph.ParseFromString(handle.read())
    except DecodeError:
        graph.Clear()
    except OSError as error:
        raise ValueError(f"Cannot read {path}: {run_folder.reason(error)}") from None
    if not graph.meta_graphs:
        raise ValueError(f"{path} is corrupt: it holds no SavedModel graph; export the model again")


def load_exported(path) -> tuple[Callable[[Any], tf.Tensor], dict[str, Any]]:
    """Loads an export for feature extraction.

    Args:
        path: a version folder, or a base folder (its newest numeric version is used).

    Returns:
        `(encode, metadata)`: `encode(images float32 [B, S, S, 3] normalised)` → `[B, D]`
        features (the `encode_normalized` signature; S is the export's image_size, and
        images of another shape raise a `ValueError`), and the `byol_tf_export.json` dict.

    Raises:
        ValueError: if `path` holds no export, or an incomplete or corrupt one (naming the
            folder and what is wrong).
    """
    if not os.path.exists(os.path.join(path, "saved_model.pb")):
        versions = [n for n in os.listdir(path) if n.isdigit()] if os.path.isdir(path) else []
        if not versions:
            raise ValueError(f"No SavedModel (saved_model.pb) found in {path}")
        path = os.path.join(path, max(versions, key=int))
    try:
        with open(os.path.join(path, METADATA_FILE)) as handle:
            metadata = json.load(handle)
    except OSError as error:
        raise ValueError(f"{path} is not a byol_tf export: {error}") from None
    except ValueError as error:  # json.JSONDecodeError
        raise ValueError(f"{path}/{METADATA_FILE} is corrupt: {error}") from None
    _check_graph(os.path.join(path, "saved_model.pb"))
    if not os.path.isdir(os.path.join(path, "variables")):
        raise ValueError(
            f"The SavedModel in {path} has no variables/ folder (the weights): copy the whole "
            "version folder, or export it again"
        )
    try:
        loaded = tf.saved_model.load(path)
    except (OSError, ValueError, IndexError, tf.errors.OpError) as error:  # IndexError: a
        # truncated variables/ data file
        raise ValueError(
            f"Cannot load the SavedModel in {path} (corrupt or incomplete; export the model "
            f"again): {run_folder.reason(error)}"
        ) from None
    if "encode_normalized" not in loaded.signatures:
        raise ValueError(f"The SavedModel in {path} has no encode_normalized signature")
    signature = loaded.signatures["encode_normalized"]
    size = int(metadata.get("image_size", 0))

    def encode(images):
        images = tf.convert_to_tensor(images, tf.float32)
        if size and (images.shape.rank != 4 or tuple(images.shape[1:]) != (size, size, 3)):
            raise ValueError(
                f"The export in {path} encodes images of shape [batch, {size}, {size}, 3], "
                f"normalised. Received: shape={images.shape}"
            )
        return signature(images=images)["representation"]

    encode.saved_model = loaded  # keeps the variables the signature reads alive
    return encode, metadata


def export_checkpoint(
    model_dir,
    export_dir,
    checkpoint=None,
    version=None,
    mean=None,
    std=None,
    log=print,
    preprocessing=RESIZE_CENTER_CROP,
) -> str:
    """Exports the online encoder of a training run's checkpoint (what the CLI does).

    Args:
        model_dir: the run's folder (holds `checkpoints/` and `run_config.json`).
        export_dir: the export base folder.
        checkpoint: a `.keras` checkpoint; default the newest readable one in `model_dir`
            (each newer, damaged one is named through `log`).
        version: export version; default the next one.
        mean: normalisation mean; default from `run_config.json`.
        std: normalisation std; default from `run_config.json`.
        log: prints a line.
        preprocessing: the serving crop (`export_encoder`); the default is the one byol_tf's
            own evaluations use (docs/serving.md).

    Returns:
        The path of the written version folder.

    Raises:
        ValueError: with no checkpoint or a damaged one, no mean/std in the flags or the run
            config, a damaged run config, or an `export_dir` that is a file or not writable
            (checked before the checkpoint is read).
    """
    checkpoint = checkpoint or (model_dir and checkpoints.latest_readable(model_dir, log))
    if not checkpoint:
        raise ValueError(f"No checkpoint found in {model_dir}/checkpoints; pass --checkpoint")
    run_config = (model_dir and run_folder.read_run_config(model_dir)) or {}
    mean, std = mean or run_config.get("mean"), std or run_config.get("std")
    if mean is None or std is None:
        raise ValueError(
            f"No {run_folder.RUN_CONFIG} with mean/std "
            f"{f'in {model_dir}' if model_dir else 'without a run folder (--model_dir)'}; "
            "pass --mean and --std (3 comma-separated numbers each, in [0, 1] pixel units)"
        )
    run_folder.prepare_folder(export_dir, "--export_dir")
    model = checkpoints.load_checkpoint(checkpoint, compile=False)
    image_size = int(model.image_shape[0])
    crop = run_config.get("crop_fraction")
    return export_encoder(
        model.encoder, export_dir, image_size, mean, std, version, crop,
        preprocessing=preprocessing,
    )  # fmt: skip
