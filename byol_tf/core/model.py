"""The BYOL keras.Model: online and target networks and the training step."""

import inspect
import warnings
from typing import Any

import keras
import tensorflow as tf

from byol_tf.core import losses, model_checks, networks, target_network, view_passes
from byol_tf.core.batches import (
    image_shape_of,
    unpack_views,  # noqa: F401  (byol_tf.core.model.unpack_views, as before)
)
from byol_tf.core.networks import mlp_head
from byol_tf.views.device_augment import ViewAugmentation  # noqa: F401  (registers it for loading)

# `keras.Model.fit`'s parameters, by which `BYOL.fit` reads its arguments.
_FIT_SIGNATURE = inspect.signature(keras.Model.fit)


@keras.saving.register_keras_serializable(package="byol_tf")
class BYOL(keras.Model):
    """Bootstrap Your Own Latent (Grill et al., 2020) as a `keras.Model`.

    The online network is `encoder` → projector → predictor; the target network is a copy of
    encoder → projector with its own weights ξ, initialised to the online weights, never given
    gradients and moved towards the online weights by `update_target(tau)` (use the `TargetEMA`
    callback; `fit` without one warns once, a `UserWarning`). `train_step` takes batches holding
    two views of the same images (see `unpack_views`), runs both orderings and minimises the sum
    of the two `2 − 2·cos(prediction, target projection)` terms, averaged over the global batch.

    Augmentation on the device: given `augmentation` (a `ViewAugmentation`, see
    `byol_tf.data.pipelines.train_step_augmentation`), `train_step` also takes the crop batches of
    `pretrain_dataset(augment_on="device")` and draws their views itself, inside the compiled
    step, each replica from its own shard.

    BatchNorm: both networks run in training mode (batch statistics), each view forwarded on
    its own statistics as in the official code. With `grouped_views` both views still go
    through each network as one batch of 2B images (twice the batch per convolution), and
    every BatchNorm normalises each view with that view's statistics: the same outputs,
    gradients and moving statistics as the official separate passes
    (`networks.GroupedBatchNormalization`). `joint_views=True` instead forwards both views as
    one batch with statistics over all 2B images, which is not the paper's setting. The target keeps
    its own BatchNorm moving statistics, updated by its own forward passes; the EMA averages
    only parameters (as the official `target_state`), unless `ema_batchnorm_statistics=True`.

    Args:
        encoder: a `keras.Model` mapping `[batch, H, W, C]` images to `[batch, features]`.
        projection_dim: output size of the projector and predictor (256).
        hidden_dim: hidden width of the projector and predictor (4096).
        image_shape: `(H, W, C)` of the training images; taken from the encoder when its
            input shape is fully defined. The model is built at construction when known,
            else call `model.build((None, H, W, C))` (under the strategy's scope).
        synchronized_bn: synchronise the heads' BatchNorm across replicas; `None` means
            "when the current distribution strategy has more than one replica".
        num_classes: if set, an online linear probe is trained on the stop-gradient
            representation of view 1 whenever batches carry labels (official code).
        joint_views: forward both views as one batch with shared BatchNorm statistics
            (see above).
        grouped_views: forward both views as one batch with per-view BatchNorm statistics:
            False (default: one pass per view), True, or "auto": True when every BatchNorm
            layer of the encoder and heads is a `networks.GroupedBatchNormalization` (the
            networks of `byol_tf.core.networks` are), else False. Ignored with `joint_views`.
            On CPU with XLA it was not faster (bench/RESULTS.md), hence the default.
        ema_batchnorm_statistics: also average BatchNorm moving statistics in the EMA.
        head_batch_norm: BatchNorm inside the projector and predictor (the paper: yes).
        head_output_bias: a bias in the last Dense of the projector and predictor (the
            official heads have none: False; docs/algorithm.md §1).
        augmentation: a `byol_tf.views.device_augment.ViewAugmentation` that turns crop batches
            into views in the train step, or None (batches must then hold views).
        head_kernel_initializer: the heads' and probe's dense kernels: None (Glorot uniform)
            or "haiku" (`hk.Linear`'s, the official network's).
        **kwargs: `keras.Model` arguments (name, ...).
    """

    def __init__(
        self,
        encoder,
        projection_dim=256,
        hidden_dim=4096,
        image_shape=None,
        synchronized_bn=None,
        num_classes=None,
        joint_views=False,
        grouped_views=False,
        ema_batchnorm_statistics=False,
        head_batch_norm=True,
        head_output_bias=True,
        augmentation=None,
        head_kernel_initializer=None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        model_checks.check_arguments(
            encoder, projection_dim, hidden_dim, num_classes, augmentation, grouped_views
        )
        if synchronized_bn is None:
            synchronized_bn = tf.distribute.get_strategy().num_replicas_in_sync > 1
        self.encoder = encoder
        self.projection_dim = projection_dim
        self.hidden_dim = hidden_dim
        self.synchronized_bn = bool(synchronized_bn)
        self.num_classes = num_classes
        self.joint_views = bool(joint_views)
        self.grouped_views = grouped_views
        self.ema_batchnorm_statistics = bool(ema_batchnorm_statistics)
        self.head_batch_norm = bool(head_batch_norm)
        self.head_output_bias = bool(head_output_bias)
        self.augmentation = augmentation
        self.head_kernel_initializer = head_kernel_initializer
        networks.make_dense_initializer(head_kernel_initializer)  # checks the name
        self.image_shape = self._resolve_image_shape(encoder, image_shape)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.std_tracker = keras.metrics.Mean(name="embedding_std")
        if num_classes:
            self.probe_loss_tracker = keras.metrics.Mean(name="probe_loss")
            self.probe_accuracy = keras.metrics.SparseCategoricalAccuracy(name="probe_accuracy")
        self._ema_function = None
        if self.image_shape is not None:
            self.build((None, *self.image_shape))

    @staticmethod
    def _resolve_image_shape(encoder, image_shape):
        if image_shape is not None:
            image_shape = tuple(image_shape)
            if len(image_shape) != 3 or not all(isinstance(d, int) and d > 0 for d in image_shape):
                raise ValueError(
                    f"image_shape must be (height, width, channels). Received: {image_shape}"
                )
            return image_shape
        try:
            shape = tuple(encoder.input_shape[1:])
        except (AttributeError, ValueError):
            return None
        return shape if len(shape) == 3 and None not in shape else None

    def build(self, input_shape) -> None:
        """Creates the heads and the target network and copies online → target weights.

        Call it inside `strategy.scope()`. `input_shape` is `(batch, H, W, C)` (a dict or pair
        of such shapes, as `fit` may pass, is reduced to the first view's).
        """
        shape = (None, *view_passes.view_shape(input_shape)[1:])
        self.image_shape = tuple(shape[1:])
        if not self.encoder.built:
            self.encoder.build(shape)
        feature_dim = model_checks.feature_dim(self.encoder, shape)

        def head(input_dim, name):
            # Under its own name: the head's variable paths start with it (`.../predictor/...`),
            # which learning-rate multipliers select (byol_tf.core.optimizers.predictor_multiplier).
            with keras.name_scope(name):
                return mlp_head(
                    input_dim, self.hidden_dim, self.projection_dim, self.synchronized_bn, name,
                    self.head_batch_norm, self.head_output_bias, self.head_kernel_initializer,
                )  # fmt: skip

        self.projector = head(feature_dim, "projector")
        self.predictor = head(self.projection_dim, "predictor")
        self.target_encoder = target_network.clone(self.encoder, shape)
        self.target_projector = head(feature_dim, "target_projector")
        if self.num_classes:
            init = networks.make_dense_initializer(self.head_kernel_initializer)
            self.probe = keras.layers.Dense(
                self.num_classes, kernel_initializer=init, name="online_probe"
            )
            self.probe.build((None, feature_dim))
        self._ema_pairs = target_network.pair_variables(
            ((self.target_encoder, self.encoder), (self.target_projector, self.projector))
        )
        target_network.initialize(self._ema_pairs)

    def _build_from_data(self, data):
        """Builds the networks from the training data's image shape, as Keras models build
        themselves from their first batch; a no-op once built."""
        if self.built or data is None:
            return
        shape = image_shape_of(data)
        if shape is None:
            raise ValueError(
                "BYOL needs the image shape to build its networks and could not read it from "
                f"the data ({type(data).__name__}). Pass image_shape=(height, width, channels) "
                "to BYOL(...), or call model.build((None, height, width, channels)) first."
            )
        with self.distribute_strategy.scope():
            self.build((None, *shape))

    _warned_without_target_ema = False

    def fit(self, x=None, *args, **kwargs) -> keras.callbacks.History:
        """`keras.Model.fit`; builds the model from `x`'s image shape first if needed.

        A `tf.data.Dataset` is not shuffled by `fit` (Keras ignores `shuffle` for datasets and
        warns when it is left at its default); `byol_tf.data`'s pipelines shuffle themselves.
        Without a `TargetEMA` among the callbacks the target network never moves: the first
        such `fit` of a model raises a `UserWarning` (as Keras warns, through Python's
        `warnings`); silence it with `warnings.filterwarnings` when you call `update_target`
        yourself, or give your own callback that does a true `moves_target` attribute.
        Views that look like [0, 255] pixels (uint8 ones; float arrays or tensors far above
        any normalised pixel) raise one `UserWarning` per model as well.
        """
        given = _FIT_SIGNATURE.bind(self, x, *args, **kwargs).arguments  # by name, as Keras
        self._warn_without_target_ema(given.get("callbacks"))
        self._warn_if_raw_pixels(x)
        self._build_from_data(x)
        if isinstance(x, tf.data.Dataset) and "shuffle" not in given:
            kwargs["shuffle"] = False
        return super().fit(x, *args, **kwargs)

    def _warn_without_target_ema(self, callbacks):
        """Warns once per model when `callbacks` hold none that moves the target
        (`target_network.moves_target`)."""
        moves = target_network.moves_target(callbacks)
        if self._warned_without_target_ema or moves:
            return
        self._warned_without_target_ema = True
        warnings.warn(
            "BYOL.fit without a byol_tf.TargetEMA callback: the target network keeps its "
            "initial weights and never moves. Pass callbacks=[byol_tf.TargetEMA(...)] (or "
            "plan.target_ema of byol_tf.training.recipes), or filter this warning if you call "
            "update_target yourself.",
            UserWarning,
            stacklevel=3,
        )

    _warned_raw_pixels = False

    def _warn_if_raw_pixels(self, x):
        """Warns once per model when the views of `x` look like [0, 255] pixels."""
        if not self._warned_raw_pixels:
            self._warned_raw_pixels = model_checks.warn_if_raw_pixels(x, stacklevel=4)

    def evaluate(self, x=None, *args, **kwargs) -> list[float] | dict[str, float]:
        """`keras.Model.evaluate`; builds the model from `x`'s image shape first if needed."""
        self._build_from_data(x)
        return super().evaluate(x, *args, **kwargs)

    def train_on_batch(self, x, *args, **kwargs) -> list[float] | dict[str, float]:
        """`keras.Model.train_on_batch`; builds the model from `x` first if needed."""
        self._build_from_data(x)
        return super().train_on_batch(x, *args, **kwargs)

    def test_on_batch(self, x, *args, **kwargs) -> list[float] | dict[str, float]:
        """`keras.Model.test_on_batch`; builds the model from `x` first if needed."""
        self._build_from_data(x)
        return super().test_on_batch(x, *args, **kwargs)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras 3 (TF backend) builds a model under a strategy by first averaging a whole
        # batch with `strategy.reduce`, which MultiWorkerMirroredStrategy rejects for a dict
        # batch. A built BYOL with a built optimiser has nothing left to build: skip it.
        # A private Keras method: tests/test_model.py pins the Keras versions whose `fit`
        # calls it with these arguments (KERAS_WITH_SYMBOLIC_BUILD).
        if self.built and self.optimizer is not None and self.optimizer.built:
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        trackers = [self.loss_tracker, self.std_tracker]
        if self.num_classes:
            trackers += [self.probe_loss_tracker, self.probe_accuracy]
        return trackers

    def call(self, inputs, training=False) -> tf.Tensor:
        """Returns the online representation y = f(images)."""
        return self.encoder(inputs, training=training)

    def _forward_views(self, view1, view2, nets):
        """`view_passes.forward_views` of `nets` (`{output name: model}`), both views as one
        batch when `joint_views`, or `grouped_views` applies."""
        if self.joint_views:
            return view_passes.forward_views(view1, view2, nets, groups=1)
        groups = 2 if self._grouped(nets.values()) else None
        return view_passes.forward_views(view1, view2, nets, groups)

    def _grouped(self, nets):
        """Whether `nets` forward both views as one batch with per-view statistics."""
        return view_passes.grouped(self.grouped_views, nets)

    def _step_losses(self, data):
        """Forward pass of one batch of view pairs (or crops); returns its `StepLosses`."""
        view1, view2, labels = view_passes.views_of(data, self.augmentation)
        target_nets = {"representation": self.target_encoder, "projection": self.target_projector}
        online_nets = {"representation": self.encoder, "projection": self.projector}
        online_nets["prediction"] = self.predictor  # the online network alone predicts
        target = self._forward_views(view1, view2, target_nets)
        online = self._forward_views(view1, view2, online_nets)
        # stop_gradient: the target is a fixed regression target for this step
        # (docs/algorithm.md §2).
        byol_loss = tf.reduce_mean(
            losses.symmetric_loss(
                online["prediction_view1"],
                online["prediction_view2"],
                tf.stop_gradient(target["projection_view1"]),
                tf.stop_gradient(target["projection_view2"]),
            )
        )
        embedding_std = losses.embedding_std(online["projection_view1"])
        probe = None
        if self.num_classes and labels is not None:
            probe = self._probe_loss(online["representation_view1"], labels)
        total = byol_loss if probe is None else byol_loss + probe.loss
        return losses.StepLosses(total, byol_loss, embedding_std, probe)

    def _probe_loss(self, representation, labels):
        """Cross-entropy of the online linear probe on labelled examples; a `ProbeLoss`."""
        # stop_gradient: labels must never reach the encoder (online evaluation only).
        logits = self.probe(tf.stop_gradient(representation))
        logits = tf.cast(logits, losses.loss_dtype(representation.dtype))
        return losses.probe_loss(logits, labels)

    def _update_metrics(self, step_losses):
        self.loss_tracker.update_state(step_losses.byol)
        self.std_tracker.update_state(step_losses.embedding_std)
        probe = step_losses.probe
        if probe is not None:
            self.probe_loss_tracker.update_state(probe.loss)
            self.probe_accuracy.update_state(probe.labels, probe.logits, probe.weights)
        logs = {m.name: m.result() for m in self.metrics}
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            # Keras 3 averages multi-worker logs with strategy.reduce(MEAN, axis=0), which
            # needs a leading axis: give each scalar one (the reduction returns scalars).
            logs = {name: tf.reshape(value, [1]) for name, value in logs.items()}
        return logs

    def train_step(self, data) -> dict[str, tf.Tensor]:
        """One optimiser step on a batch of view pairs (both orderings)."""
        if not self.built:  # fit() builds first; only a hand-made train function gets here
            raise ValueError(
                "BYOL is not built: pass image_shape=(height, width, channels) to BYOL(...) or "
                "call model.build((None, height, width, channels)) before training."
            )
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            step_losses = self._step_losses(data)
            # Gradients are summed over replicas: dividing by their number makes the sum the
            # gradient of the global-batch mean (docs/algorithm.md §2).
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = self.optimizer.scale_loss(step_losses.total / replicas)
        gradients = tape.gradient(scaled, variables)
        # Batches without labels leave the online probe without gradients: skip it.
        pairs = [(g, v) for g, v in zip(gradients, variables, strict=True) if g is not None]
        self.optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
        return self._update_metrics(step_losses)

    def test_step(self, data) -> dict[str, tf.Tensor]:
        """Loss of a batch of view pairs without any update."""
        return self._update_metrics(self._step_losses(data))

    def update_target(self, tau) -> None:
        """ξ ← τ·ξ + (1 − τ)·θ for every target parameter (compiled; call cross-replica).

        BatchNorm moving statistics are left to the target's own forward passes unless the
        model was built with `ema_batchnorm_statistics=True`.

        Args:
            tau: decay rate in [0, 1]; 1 leaves the target unchanged, 0 copies the online net.
        """
        if self._ema_function is None:
            average_all = self.ema_batchnorm_statistics
            pairs = [(t, o) for t, o in self._ema_pairs if o.trainable or average_all]
            # XLA on one replica: everything lives on one device, where it fuses the updates.
            single = self.distribute_strategy.num_replicas_in_sync == 1
            self._ema_function = target_network.ema_function(pairs, jit_compile=single)
        self._ema_function(tf.constant(tau, tf.float32))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "encoder": keras.saving.serialize_keras_object(self.encoder),
                "projection_dim": self.projection_dim,
                "hidden_dim": self.hidden_dim,
                "image_shape": list(self.image_shape) if self.image_shape else None,
                "synchronized_bn": self.synchronized_bn,
                "num_classes": self.num_classes,
                "joint_views": self.joint_views,
                "grouped_views": self.grouped_views,
                "ema_batchnorm_statistics": self.ema_batchnorm_statistics,
                "head_batch_norm": self.head_batch_norm,
                "head_output_bias": self.head_output_bias,
                "augmentation": keras.saving.serialize_keras_object(self.augmentation),
                "head_kernel_initializer": self.head_kernel_initializer,
            }
        )
        return config

    @classmethod
    def from_config(cls, config) -> "BYOL":
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        if config.get("augmentation") is not None:
            config["augmentation"] = keras.saving.deserialize_keras_object(config["augmentation"])
        return cls(**config)
