"""Internal: the source kinds (arrays, image folders, tensorflow-datasets) and their streams."""

import abc
import dataclasses

import numpy as np
import tensorflow as tf

from byol_tf.data import decoding
from byol_tf.views import rng

AUTOTUNE = tf.data.AUTOTUNE
_SHUFFLE_TAG, _CROP_TAG = 0x5348, 0x4352  # keep the shuffle and crop streams apart


@dataclasses.dataclass(frozen=True)
class SourceInfo:
    """What training code needs to know about a source split.

    Attributes:
        num_examples: number of examples in the split.
        num_classes: number of classes, or None when unlabelled.
        class_names: class names in label order, or None.
        mean: per-channel mean used for normalisation.
        std: per-channel standard deviation used for normalisation.
    """

    num_examples: int
    num_classes: int | None
    class_names: tuple | None
    mean: tuple
    std: tuple


def _epoch_stream(num_examples, offset, repeat, epoch_records):
    """`epoch_records(epoch)` for the epochs from the one holding element `offset`, skipped to it.

    Epochs are counted from 0 at element 0; with `repeat` the stream is infinite, else it ends
    with that epoch.
    """
    first_epoch, skip = divmod(offset, num_examples)
    if repeat:
        epochs = tf.data.Dataset.counter(first_epoch)
    else:
        epochs = tf.data.Dataset.range(first_epoch, first_epoch + 1)
    return epochs.flat_map(epoch_records).skip(skip)


def _crop_decoder(seed, configs, image_size):
    """`decode(data, position)`: the two crops of the stream's element `position` (decode_crops)."""

    def crops(data, position):
        elem_seed = rng.fold_in(rng.seed_pair(seed, _CROP_TAG), position)
        return decoding.decode_crops(data, elem_seed, configs, image_size)

    return crops


def _batch_pairs(elements, batch_size):
    """Batches `(crops or image, position, label)` elements as `(crops or images, labels)`."""
    elements = elements.map(lambda image, position, label: (image, label))
    return elements.batch(batch_size, drop_remainder=True, num_parallel_calls=AUTOTUNE)


@dataclasses.dataclass(frozen=True)
class Source(abc.ABC):
    """A resolved source split: its records, its pretraining batches, its evaluation batches.

    Made by `byol_tf.data.source`; every pipeline takes one.

    Attributes:
        info: the split's `SourceInfo`.
        name: what was resolved, for messages: "demo", the folder, the tfds name, or "arrays".
        split: the split ("train", "test", a tfds split such as "train[:10%]"...).
        skipped: the `byol_tf.data.decoding.SkippedFiles` of the image files this source's
            pipelines skipped (corrupt ones, with `skip_corrupt`, and those of unsupported
            formats); shared by the copies `with_stats` makes, which read the same files.
    """

    info: SourceInfo
    name: str = dataclasses.field(default="arrays", kw_only=True)
    split: str = dataclasses.field(default="train", kw_only=True)
    skipped: decoding.SkippedFiles = dataclasses.field(
        default_factory=decoding.SkippedFiles, kw_only=True, repr=False, compare=False
    )

    def skipped_files(self) -> list:
        """Distinct paths of the image files skipped so far in reading this source, in the
        order they were first skipped: corrupt ones (`skip_corrupt=True`) and those of
        unsupported formats (`.webp`, `.tiff`, ..., found when the folder was listed)."""
        return self.skipped.paths()

    @property
    @abc.abstractmethod
    def image_shape(self) -> tuple | None:
        """`(height, width)` shared by all images, or None when their sizes vary."""

    @property
    def crops_at_decode(self) -> bool:
        """Whether `pair_batches` holds crop pairs taken at decode time, not whole images.

        Images of varying sizes are cropped when decoded; fixed-size ones later, inside the
        XLA augmentation.
        """
        return self.image_shape is None

    @abc.abstractmethod
    def records(self, seed, offset, repeat, shuffle_buffer) -> tf.data.Dataset:
        """The shuffled record stream of pretraining from element `offset` of the run on.

        Epoch e's order is seeded by (seed, e), so the stream from `offset` is the same whether
        the run was interrupted or not; the skip happens before any decoding.

        Args:
            seed: int seed of the run.
            offset: number of elements of the run already consumed.
            repeat: an infinite stream of epochs, or one pass to the end of the current epoch.
            shuffle_buffer: records shuffled together, where the source is not fully permuted.

        Returns:
            A `tf.data.Dataset` of records, in the form that `pair_batches` takes.
        """

    @abc.abstractmethod
    def pair_batches(
        self, records, seed, batch_size, image_size, configs, skip_corrupt
    ) -> tf.data.Dataset:
        """Batches for the pretraining augmentation, from `records`.

        Args:
            records: the stream of `records`.
            seed: int seed of the run (seeds crops taken at decode time).
            batch_size: batch size; the last partial batch is dropped.
            image_size: side of the crops taken at decode time.
            configs: the two `byol_tf.views.augment.ViewConfig`.
            skip_corrupt: skip unreadable image files instead of failing.

        Returns:
            A `tf.data.Dataset` of `(images [B, H, W, C], labels int32 [B])`, or with
            `crops_at_decode` `(crop pairs float32 [B, 2, S, S, 3], labels)`; -1 labels
            for unlabelled examples.
        """

    @abc.abstractmethod
    def eval_batches(self, prepare, batch_size, skip_corrupt, max_examples=None) -> tf.data.Dataset:
        """`(prepare(image), label)` batches in the split's order, the last partial one kept.

        Args:
            prepare: maps an image [..., H, W, C] (or a batch of them) to the model's input.
            batch_size: batch size.
            skip_corrupt: skip unreadable image files instead of failing.
            max_examples: at most this many examples, spread evenly over the split (indexed
                sources: every (N / max_examples)-th; tfds splits, whose examples are
                shuffled when prepared: the first); None for all.

        Returns:
            A `tf.data.Dataset` of `(prepared images, labels)`.
        """


@dataclasses.dataclass(frozen=True)
class _IndexedSource(Source):
    """A source whose examples are addressed by index, fully permuted every epoch."""

    labels: np.ndarray | None

    def _spread(self, max_examples):
        """Indices of at most `max_examples` examples spread evenly over the split, in order
        (a class-ordered folder keeps every class), or a slice of all of them."""
        n = self.info.num_examples
        if max_examples is None or max_examples >= n:
            return slice(None)
        return np.floor(np.arange(max_examples) * (n / max_examples)).astype(np.int64)

    def records(self, seed, offset, repeat, shuffle_buffer) -> tf.data.Dataset:
        """Example indices, int32 scalars (see `Source.records`; `shuffle_buffer` is unused)."""
        n = self.info.num_examples

        def epoch_order(epoch):
            keys = rng.uniform([n], rng.fold_in(rng.seed_pair(seed, _SHUFFLE_TAG), epoch))
            return tf.data.Dataset.from_tensor_slices(tf.argsort(keys, stable=True))

        return _epoch_stream(n, offset, repeat, epoch_order)

    def _label_tensor(self):
        """int32 [N]: the labels, or -1 for every example of an unlabelled source."""
        n = self.info.num_examples
        return tf.constant(self.labels if self.labels is not None else np.full(n, -1, np.int32))


@dataclasses.dataclass(frozen=True)
class ArraySource(_IndexedSource):
    """Images held in memory (NumPy arrays, the demo set), cropped inside the augmentation.

    Attributes:
        info: the split's `SourceInfo`.
        labels: int32 [N], or None.
        images: uint8 or float32 [N, H, W, C].
    """

    images: np.ndarray

    @property
    def image_shape(self) -> tuple:
        """`(height, width)` of the images."""
        return self.images.shape[1:3]

    def pair_batches(
        self, records, seed, batch_size, image_size, configs, skip_corrupt
    ) -> tf.data.Dataset:
        """Batches of whole images and labels (see `Source.pair_batches`)."""
        images, labels = tf.constant(self.images), self._label_tensor()
        batches = records.batch(batch_size, drop_remainder=True)
        return batches.map(
            lambda i: (tf.gather(images, i), tf.gather(labels, i)), num_parallel_calls=AUTOTUNE
        )

    def eval_batches(self, prepare, batch_size, skip_corrupt, max_examples=None) -> tf.data.Dataset:
        """Batches prepared as a whole (see `Source.eval_batches`)."""
        keep = self._spread(max_examples)
        ds = tf.data.Dataset.from_tensor_slices((self.images[keep], self.labels[keep]))
        ds = ds.batch(batch_size)
        return ds.map(lambda x, y: (prepare(x), y), num_parallel_calls=AUTOTUNE)


@dataclasses.dataclass(frozen=True)
class FolderSource(_IndexedSource):
    """Image files, decoded (and cropped, for pretraining) on the fly.

    Attributes:
        info: the split's `SourceInfo`.
        labels: int32 [N], or None.
        paths: str [N], the files.
    """

    paths: np.ndarray

    @property
    def image_shape(self) -> None:
        """None: the files' sizes are not known in advance."""
        return None

    def _skipped_into(self, skip_corrupt):
        """Where `decoding.decode_files` counts the files it skips: None fails on the first."""
        return self.skipped if skip_corrupt else None

    def records(self, seed, offset, repeat, shuffle_buffer) -> tf.data.Dataset:
        """`(index, position)` pairs: the file's index and the element's position in the run."""
        indices = super().records(seed, offset, repeat, shuffle_buffer)
        return indices.enumerate(offset).map(lambda position, i: (i, position))

    def pair_batches(
        self, records, seed, batch_size, image_size, configs, skip_corrupt
    ) -> tf.data.Dataset:
        """Batches of crop pairs and labels (see `Source.pair_batches`)."""
        paths, labels = tf.constant(self.paths), self._label_tensor()
        elements = records.map(lambda i, g: (tf.gather(paths, i), g, tf.gather(labels, i)))
        crops = _crop_decoder(seed, configs, image_size)
        decoded = decoding.decode_files(elements, crops, self._skipped_into(skip_corrupt))
        return _batch_pairs(decoded, batch_size)

    def eval_batches(self, prepare, batch_size, skip_corrupt, max_examples=None) -> tf.data.Dataset:
        """Batches of files decoded and prepared one by one (see `Source.eval_batches`)."""
        keep = self._spread(max_examples)
        elements = tf.data.Dataset.from_tensor_slices((self.paths[keep], self.labels[keep]))
        elements = elements.map(lambda p, y: (p, tf.constant(0, tf.int64), y))
        elements = decoding.decode_files(
            elements,
            lambda data, _: prepare(decoding.decode_full(data)),
            self._skipped_into(skip_corrupt),
        )
        return elements.map(lambda image, _, label: (image, label)).batch(batch_size)


@dataclasses.dataclass(frozen=True)
class TfdsSource(Source):
    """A tensorflow-datasets split, read with the images left encoded.

    Attributes:
        info: the split's `SourceInfo`.
        builder: the prepared `tfds` dataset builder.
        image_key: the image feature.
        label_key: the `ClassLabel` feature, or None.
        fixed_shape: `(height, width, 3)` when all images share it, else None.
    """

    builder: object
    image_key: str
    label_key: str | None
    fixed_shape: tuple | None

    @property
    def image_shape(self) -> tuple | None:
        """`(height, width)` when the dataset declares one image size, else None."""
        return self.fixed_shape[:2] if self.fixed_shape else None

    def _read(self):
        """The split in file order, images left encoded (decoded, or crop-decoded, later)."""
        import tensorflow_datasets as tfds

        return self.builder.as_dataset(
            split=self.split,
            shuffle_files=False,
            decoders={self.image_key: tfds.decode.SkipDecoding()},
            read_config=tfds.ReadConfig(add_tfds_id=False, try_autocache=False),
        )

    def _label(self, record):
        if self.label_key:
            return tf.cast(record[self.label_key], tf.int32)
        return tf.constant(-1, tf.int32)

    def records(self, seed, offset, repeat, shuffle_buffer) -> tf.data.Dataset:
        """`(position, record)` pairs (see `Source.records`).

        The records (stored shuffled by tfds) are shuffled within consecutive blocks of
        `shuffle_buffer`, with stateless ops: `Dataset.shuffle` would mix in the global TF seed
        and cannot take a per-epoch seed tensor when that is 0.
        """
        n = self.info.num_examples
        blocks = self._read().batch(min(shuffle_buffer, n)).enumerate()

        def epoch_records(epoch):
            epoch_seed = rng.fold_in(rng.seed_pair(seed, _SHUFFLE_TAG), epoch)

            def shuffle_block(index, block):
                size = tf.shape(tf.nest.flatten(block)[0])[0]
                keys = rng.uniform([size], rng.fold_in(epoch_seed, index))
                order = tf.argsort(keys, stable=True)
                return tf.data.Dataset.from_tensor_slices(
                    tf.nest.map_structure(lambda t: tf.gather(t, order), block)
                )

            return blocks.flat_map(shuffle_block)

        return _epoch_stream(n, offset, repeat, epoch_records).enumerate(offset)

    def pair_batches(
        self, records, seed, batch_size, image_size, configs, skip_corrupt
    ) -> tf.data.Dataset:
        """Batches of whole images (fixed size) or crop pairs (see `Source.pair_batches`)."""
        fixed = self.fixed_shape
        if fixed:
            decode = lambda data, position: decoding.decode_full(data)  # noqa: E731
        else:
            decode = _crop_decoder(seed, configs, image_size)

        def element(position, record):
            label = self._label(record)
            return decode(record[self.image_key], position), position, label

        elements = records.map(element, num_parallel_calls=AUTOTUNE)
        if fixed:
            elements = elements.map(
                lambda image, position, label: (tf.ensure_shape(image, fixed), position, label)
            )
        return _batch_pairs(elements, batch_size)

    def eval_batches(self, prepare, batch_size, skip_corrupt, max_examples=None) -> tf.data.Dataset:
        """Batches of images decoded and prepared one by one (see `Source.eval_batches`)."""

        def element(record):
            return prepare(decoding.decode_full(record[self.image_key])), self._label(record)

        records = self._read()
        if max_examples is not None:
            records = records.take(max_examples)  # tfds shuffles a split when preparing it
        return records.map(element, num_parallel_calls=AUTOTUNE).batch(batch_size)
