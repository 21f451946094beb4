"""The serving crop of exports: imported official networks are served as the official evaluation
prepares its images, on non-square images too; byol_tf's own exports keep byol_tf's evaluation
crop unless asked for the official one (docs/serving.md).

The reference is the official evaluation's preprocessing written out with the same TensorFlow
calls (deepmind-research `byol/utils/dataset.py`, `_decode_and_center_crop` then
`_preprocess_image`): it reads JPEG bytes, cuts the centre square while decoding and resizes to
224 px, so the networks here take 224 px images.
"""

import json
import os

import keras
import numpy as np
import official_format
import pytest
import tensorflow as tf

from byol_tf.official import importer
from byol_tf.runs import checkpoints
from byol_tf.serving import export

SIZE = 224  # the official evaluation's side, written into its preprocessing
SMALL = dict(depth=50, width=1 / 16, hidden=64, projection=32, classes=10)
# (height, width): landscape and portrait 4:3, and sides whose margin around the square is odd,
# where the offset's rounding ((margin + 1) // 2) matters.
SHAPES = [(240, 320), (320, 240), (241, 301), (301, 257)]
TOLERANCE = 1e-4  # of the largest reference output


def official_eval_image(jpeg):
    """One evaluation image as the official pipeline makes it from JPEG bytes (float32 [224,
    224, 3] in [0, 1]): the centre square of 224/256 of the short side, read by
    `decode_and_crop_jpeg` at offset ((side difference) + 1) // 2, resized bicubic with
    `tf.image.resize`'s defaults (no antialiasing), divided by 255 and clipped."""
    shape = tf.image.extract_jpeg_shape(jpeg)
    height, width = shape[0], shape[1]
    short = tf.cast(tf.minimum(height, width), tf.float32)
    side = tf.cast((224 / (224 + 32)) * short, tf.int32)
    window = tf.stack([((height - side) + 1) // 2, ((width - side) + 1) // 2, side, side])
    image = tf.image.decode_and_crop_jpeg(jpeg, window, channels=3)
    assert image.dtype == tf.uint8
    image = tf.image.resize(image, [224, 224], tf.image.ResizeMethod.BICUBIC)
    return tf.clip_by_value(image / 255.0, 0.0, 1.0)


def jpeg_cases(seed=0, count=2):
    """`[(uint8 pixels [count, h, w, 3], reference images [count, 224, 224, 3])]` per shape.

    The pixels are what a client decodes from the JPEG files and sends; without chroma
    subsampling, decoding a window of the file gives exactly those pixels' window.
    """
    rng = np.random.default_rng(seed)
    cases = []
    for height, width in SHAPES:
        files = [
            tf.io.encode_jpeg(
                rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
                quality=95,
                chroma_downsampling=False,
            )
            for _ in range(count)
        ]
        pixels = np.stack([tf.io.decode_jpeg(f, channels=3).numpy() for f in files])
        reference = np.stack([official_eval_image(f).numpy() for f in files])
        cases.append((pixels, reference))
    return cases


def _normalize(unit):
    return ((unit - np.array(importer.OFFICIAL_MEAN)) / np.array(importer.OFFICIAL_STD)).astype(
        np.float32
    )


def _worst(ours, reference):
    reference = np.asarray(reference)
    return float(np.max(np.abs(np.asarray(ours) - reference)) / np.max(np.abs(reference)))


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """A narrow official-format ResNet-50 with random weights, imported at 224 px."""
    folder = tmp_path_factory.mktemp("official_serving")
    params_shapes, state_shapes = official_format.official_shapes(**SMALL)
    online = official_format.random_trees(params_shapes, state_shapes, seed=5)
    target = official_format.random_trees(params_shapes, state_shapes, seed=6)
    path = str(folder / "pretrain_small.pkl")
    official_format.write(path, online[0], target[0], online[1], target[1])
    result = importer.import_checkpoint(
        path, str(folder / "run"), str(folder / "export"), image_size=SIZE, log=lambda _: None
    )
    model = checkpoints.load_checkpoint(result["checkpoint"], compile=False)
    return dict(result=result, model=model, loaded=tf.saved_model.load(result["export"]))


def test_import_exports_with_the_official_crop(tmp_path, monkeypatch):
    # Fast: what byol-import asks of the export (the slow tests below serve its SavedModel).
    params_shapes, state_shapes = official_format.official_shapes(**SMALL)
    online = official_format.random_trees(params_shapes, state_shapes, seed=5)
    path = str(tmp_path / "pretrain_small.pkl")
    official_format.write(path, online[0], online[0], online[1], online[1])
    calls = []
    monkeypatch.setattr(export, "export_encoder", lambda *a, **kw: calls.append(kw) or "done")
    importer.import_checkpoint(
        path, None, str(tmp_path / "export"), image_size=32, log=lambda _: None
    )
    assert [kw.get("preprocessing") for kw in calls] == [export.OFFICIAL_CENTER_CROP]


@pytest.mark.slow
def test_imported_export_records_the_official_crop(imported):
    with open(os.path.join(imported["result"]["export"], export.METADATA_FILE)) as handle:
        metadata = json.load(handle)
    assert metadata["preprocessing"] == export.OFFICIAL_CENTER_CROP == "official_center_crop"
    assert metadata["crop_fraction"] == 224 / 256 and metadata["image_size"] == SIZE


@pytest.mark.slow
def test_imported_export_serves_non_square_images_as_the_official_evaluation(imported):
    model, signatures = imported["model"], imported["loaded"].signatures
    for pixels, reference in jpeg_cases():
        embedding = model.encoder(_normalize(reference), training=False).numpy()
        logits = model.probe(embedding).numpy()
        served = signatures["serving_default"](images=tf.constant(pixels))
        classified = signatures["classify"](images=tf.constant(pixels))
        worst = {
            "serving_default": _worst(served["representation"], embedding),
            "classify representation": _worst(classified["representation"], embedding),
            "classify logits": _worst(classified["logits"], logits),
        }
        assert max(worst.values()) <= TOLERANCE, (pixels.shape, worst)


@pytest.mark.slow
def test_the_resize_then_crop_pipeline_would_fail_the_comparison(imported):
    # The crop byol_tf's own exports keep (antialiased resize of the short side, then the
    # centre square): on non-square images it is far outside the tolerance above.
    encoder = imported["model"].encoder
    module = export.EncoderModule(
        encoder, SIZE, importer.OFFICIAL_MEAN, importer.OFFICIAL_STD,
        preprocessing=export.RESIZE_CENTER_CROP,
    )  # fmt: skip
    for pixels, reference in jpeg_cases(count=1):
        embedding = encoder(_normalize(reference), training=False).numpy()
        served = module.serve(tf.constant(pixels))["representation"]
        worst = _worst(served, embedding)
        print(f"{pixels.shape[1]}x{pixels.shape[2]} resize-then-crop vs official crop: {worst:.2e}")
        assert worst > 10 * TOLERANCE


def _small_encoder(size):
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, kernel_initializer="he_normal")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, kernel_initializer="he_normal")(x)
    return keras.Model(inputs, keras.layers.Flatten()(x))  # every pixel's position matters


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    keras.utils.set_random_seed(0)
    encoder = _small_encoder(SIZE)
    folder = str(tmp_path_factory.mktemp("own_export"))
    stats = dict(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    default = export.export_encoder(encoder, folder, SIZE, **stats)
    official_crop = export.export_encoder(
        encoder, folder, SIZE, preprocessing=export.OFFICIAL_CENTER_CROP, **stats
    )
    return dict(encoder=encoder, default=default, official=official_crop, **stats)


def test_own_exports_keep_byol_tf_evaluation_crop_by_default(own):
    _, metadata = export.load_exported(own["default"])
    assert metadata["preprocessing"] == export.RESIZE_CENTER_CROP == "resize_center_crop"
    # ... which is byol_tf.data.eval_dataset's default: the antialiased short-side resize, then
    # the centre square (the existing contract of tests/test_export.py).
    pixels, _ = jpeg_cases(count=1)[0]
    scale = SIZE / (224 / 256) / min(pixels.shape[1:3])
    resized = tf.image.resize(
        pixels,
        [round(pixels.shape[1] * scale), round(pixels.shape[2] * scale)],
        method="bicubic",
        antialias=True,
    ).numpy()
    top, left = (resized.shape[1] - SIZE) // 2, (resized.shape[2] - SIZE) // 2
    square = np.clip(resized[:, top : top + SIZE, left : left + SIZE] / 255.0, 0, 1)
    normalized = ((square - own["mean"]) / own["std"]).astype(np.float32)
    expected = own["encoder"](normalized).numpy()
    served = tf.saved_model.load(own["default"]).signatures["serving_default"]
    representation = served(images=tf.constant(pixels))["representation"]
    assert _worst(representation, expected) <= TOLERANCE


def test_own_export_can_take_the_official_crop(own):
    _, metadata = export.load_exported(own["official"])
    assert metadata["preprocessing"] == export.OFFICIAL_CENTER_CROP
    served = tf.saved_model.load(own["official"]).signatures["serving_default"]
    for pixels, reference in jpeg_cases(seed=1, count=1):
        normalized = ((reference - own["mean"]) / own["std"]).astype(np.float32)
        expected = own["encoder"](normalized).numpy()
        representation = served(images=tf.constant(pixels))["representation"]
        assert _worst(representation, expected) <= TOLERANCE, pixels.shape


def test_an_unknown_preprocessing_is_refused_in_one_line(tmp_path):
    with pytest.raises(ValueError, match=r"preprocessing must be one of .*Received: .*'bilinear'"):
        export.export_encoder(
            _small_encoder(SIZE), str(tmp_path), SIZE, 0.5, 0.25, preprocessing="bilinear"
        )
    assert not os.listdir(tmp_path)


@pytest.mark.parity
def test_imported_export_equals_the_haiku_network_on_non_square_images(tmp_path):
    """The official network itself (Haiku, as in tests/test_official_parity.py) on the official
    evaluation images, against the SavedModel of its import fed the decoded pixels."""
    pytest.importorskip("haiku")
    jax = pytest.importorskip("jax")
    import test_official_parity as parity

    hidden, projection, classes = 64, 32, 10
    network = parity._official_network(50, 1 / 16, hidden, projection, classes)
    cases = jpeg_cases(seed=2)
    params, state = network.init(jax.random.PRNGKey(0), cases[0][1], True)
    params, state = parity._random_like(params, state, seed=11)
    target_params, target_state = parity._random_like(params, state, seed=12)
    path = str(tmp_path / "pretrain_res50.pkl")
    official_format.write(path, params, target_params, state, target_state, frozen=False)
    result = importer.import_checkpoint(
        path, None, str(tmp_path / "export"), image_size=SIZE, log=lambda _: None
    )
    signatures = tf.saved_model.load(result["export"]).signatures
    for pixels, reference in cases:
        expected, _ = network.apply(params, state, reference, False)
        served = signatures["serving_default"](images=tf.constant(pixels))
        classified = signatures["classify"](images=tf.constant(pixels))
        worst = {
            "embedding": _worst(served["representation"], expected["embedding"]),
            "logits": _worst(classified["logits"], expected["logits"]),
        }
        print(f"{pixels.shape[1]}x{pixels.shape[2]} SavedModel vs official network:", worst)
        assert max(worst.values()) <= TOLERANCE, (pixels.shape, worst)
