"""DeepMind's official BYOL checkpoints as byol_tf networks: mapping, import, `--init_from`.

`byol_tf.official.reader` reads a checkpoint without running code from it and
`byol_tf.official.structure` reads the network it holds; here its Haiku modules become the
layers of a `BYOL` model (`res_net50/block_group_0/block_0/conv_0` is
`encoder/stage1_block1_conv1`, `projector/linear` is `projector/hidden`, ...), which
`import_checkpoint` writes as a run folder or a SavedModel. docs/official_weights.md describes
the mapping.
"""

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from byol_tf.official.reader import (  # noqa: F401  (byol_tf.official.importer.<name>, as before)
    EXPECTED_FORMAT,
    CheckpointFormatError,
    load_official,
)
from byol_tf.official.structure import (  # noqa: F401  (byol_tf.official.importer.<name>, as before)
    Architecture,
    architecture,
    encoder_channels,
    expected_names,
    read_checkpoint,
)
from byol_tf.views.image_ops import IMAGENET_MEAN, IMAGENET_STD

if TYPE_CHECKING:
    from byol_tf.core.model import BYOL

# The official input normalisation (byol/utils/dataset.py: images in [0, 1], ImageNet statistics).
OFFICIAL_MEAN, OFFICIAL_STD = IMAGENET_MEAN, IMAGENET_STD


def _layer_weights(module, params, state, path):
    """The Keras weight list of one Haiku module: conv `[w]`, linear `[w, b]` or `[w]`,
    BatchNorm `[γ, β, moving mean, moving variance]`."""
    values = params.get(module)
    if values is None:
        raise CheckpointFormatError(
            f"{path}: no parameters for {module}; expected {EXPECTED_FORMAT}"
        )
    if "scale" in values:  # BatchNorm: parameters [1, ..., C], statistics the EMA averages
        stats = [_ema_average(state, f"{module}/{ema}", path) for ema in ("mean_ema", "var_ema")]
        return [np.reshape(values[k], (-1,)) for k in ("scale", "offset")] + stats
    return [values["w"]] + ([values["b"]] if "b" in values else [])


def _ema_average(state, name, path):
    """The debiased moving average Haiku's BatchNorm uses in inference, flattened."""
    values = state.get(name)
    if values is None:
        raise CheckpointFormatError(f"{path}: no state {name}; expected {EXPECTED_FORMAT}")
    if "average" in values:
        return np.reshape(values["average"], (-1,))
    # Older states hold only the zero-debiased EMA's hidden value and counter (decay 0.9).
    counter = float(np.asarray(values["counter"]).reshape(-1)[0])
    return np.reshape(values["hidden"], (-1,)) / (1.0 - 0.9**counter)


def network_weights(
    trees, arch, path="checkpoint", target=False
) -> dict[tuple[str, str | None], list[np.ndarray]]:
    """`{(network, layer): [arrays]}` of the online (or target) network, in Keras order.

    Raises:
        CheckpointFormatError: naming `path` and the first missing module.
    """
    params = trees["target_params" if target else "online_params"]
    state = trees["target_state" if target else "online_state"]
    weights = {}
    for module, (network, layer) in expected_names(arch).items():
        if target and network not in ("encoder", "projector"):
            continue
        weights[(network, layer)] = _layer_weights(module, params, state, path)
    return weights


def build_official_model(arch, image_size=224, channels=None) -> "BYOL":
    """An uncompiled `BYOL` model with the official network's architecture.

    Haiku's initialisation, the official heads (no output bias) and a probe of
    `arch.num_classes`; weights are then set by `assign`.

    Args:
        arch: what `architecture` returned.
        image_size: the encoder's input side.
        channels: `{convolution layer: output channels}` that differ from what
            `networks.resnet` builds at `arch.width_multiplier` (`encoder_channels` of the
            file); None: the stem of `arch.stem_width`, the rest as `networks.resnet` builds.
    """
    from byol_tf.core import networks
    from byol_tf.core.model import BYOL

    encoder = networks.resnet(
        arch.depth,
        arch.width_multiplier,
        input_shape=(image_size, image_size, 3),
        zero_init_residual=True,
        kernel_initializer="haiku",
        name="encoder",
    )
    if not channels:
        channels = {"stem_conv": arch.stem_width} if arch.stem_width else {}
    encoder = _with_channels(encoder, channels)
    return BYOL(
        encoder,
        arch.projection_dim,
        arch.hidden_dim,
        image_shape=(image_size, image_size, 3),
        synchronized_bn=False,
        num_classes=arch.num_classes,
        head_output_bias=False,
    )


def _with_channels(encoder, channels):
    """`encoder` rebuilt with the output channels of `channels` (`{conv layer: count}`)."""
    changed = {n: c for n, c in channels.items() if encoder.get_layer(n).filters != c}
    if not changed:
        return encoder
    import keras

    def clone(layer):
        config = layer.get_config()
        if layer.name in changed:
            config["filters"] = changed[layer.name]
        return layer.__class__.from_config(config)

    return keras.models.clone_model(encoder, clone_function=clone)


def _network(model, name, target):
    if name == "probe":
        return model.probe
    if target:
        name = f"target_{name}"
    return getattr(model, name)


def assign(model, trees, arch, path="checkpoint", probe=True) -> None:
    """Sets the online and target networks (and probe) of `model` from an official checkpoint.

    Args:
        model: a built `BYOL` model of `arch`'s architecture.
        trees: what `load_official` returned.
        arch: what `architecture` returned.
        path: the checkpoint's name in messages.
        probe: also set the probe from the official classifier (False: leave it as it is).

    Raises:
        CheckpointFormatError: naming `path`, when a module is missing or its shape differs
            from the layer's.
    """
    modules = {keras: haiku for haiku, keras in expected_names(arch).items()}
    for target in (False, True):
        for (network, layer), values in network_weights(trees, arch, path, target).items():
            if network == "probe" and not probe:
                continue
            net = _network(model, network, target)
            keras_layer = net if layer is None else net.get_layer(layer)
            shapes = [tuple(w.shape) for w in keras_layer.weights]
            if shapes != [tuple(v.shape) for v in values]:
                raise CheckpointFormatError(
                    f"{path}: {modules[(network, layer)]} has shapes "
                    f"{[tuple(v.shape) for v in values]}, which do not fit the official "
                    f"ResNet-{arch.depth} read from the file ({network}/{layer}: {shapes})"
                )
            keras_layer.set_weights([np.asarray(v, np.float32) for v in values])


def import_checkpoint(
    checkpoint,
    model_dir=None,
    export_dir=None,
    image_size=224,
    dataset="imagenet2012",
    log=print,
    manual_dir=None,
) -> dict[str, Any]:
    """Converts an official BYOL checkpoint into a byol_tf run folder and/or a SavedModel.

    The run folder holds `checkpoints/ckpt-<step>.keras` (online and target networks with their
    BatchNorm statistics, and the online classifier as the probe) and `run_config.json` (the
    official normalisation), for `evaluate.py --model_dir` and `train.py --init_from`. The
    SavedModel has the `serving_default` and `encode_normalized` signatures of every export,
    and `classify` (ImageNet logits of the classifier the official run trained on the
    stop-gradient representation).

    Args:
        checkpoint: the official `.pkl` file.
        model_dir: a new (or empty) run folder, or None.
        export_dir: a SavedModel base folder, or None.
        image_size: the encoder's input side (224 in the official runs).
        dataset: the data set recorded in `run_config.json`.
        log: prints a line.
        manual_dir: the data set's tensorflow-datasets manual folder, recorded too.

    Returns:
        `{"architecture", "step", "checkpoint", "export"}` (paths, None when not written).

    Raises:
        CheckpointFormatError: one line naming the file when it is not an official checkpoint.
        ValueError: one line when `model_dir` already holds a run, or a folder is not writable.
    """
    from byol_tf.runs import checkpoints, run_folder
    from byol_tf.serving import export

    if model_dir:
        run_folder.prepare_folder(model_dir, "--model_dir")
        if checkpoints.list_checkpoints(model_dir):
            raise ValueError(
                f"--model_dir={model_dir} already holds a run's checkpoints; import into a new "
                "folder"
            )
    if export_dir:
        run_folder.prepare_folder(export_dir, "--export_dir")
    trees, arch = read_checkpoint(checkpoint)
    log(
        f"{checkpoint}: ResNet-{arch.depth} ×{arch.width_multiplier:g}"
        + (f" (a stem of {arch.stem_width} channels)" if arch.stem_width else "")
        + f" at step {trees['step']}, heads {arch.hidden_dim}→{arch.projection_dim}, "
        f"classifier of {arch.num_classes or 'no'} classes."
    )
    model = build_official_model(arch, image_size, encoder_channels(trees["online_params"], arch))
    assign(model, trees, arch, checkpoint)
    result = {"architecture": arch._asdict(), "step": trees["step"], "checkpoint": None}
    if model_dir:
        result["checkpoint"] = checkpoints.save_checkpoint(model, model_dir, trees["step"])
        run_config = _run_config(arch, image_size, dataset, checkpoint)
        if manual_dir:
            run_config["manual_dir"] = manual_dir
        run_folder.write_run_config(model_dir, run_config)
        log(f"Wrote {result['checkpoint']} and {run_folder.RUN_CONFIG}.")
    result["export"] = None
    if export_dir:
        result["export"] = export.export_encoder(
            model.encoder, export_dir, image_size, OFFICIAL_MEAN, OFFICIAL_STD,
            classifier=model.probe if arch.num_classes else None,
            preprocessing=export.OFFICIAL_CENTER_CROP,  # the official evaluation's crop
        )  # fmt: skip
        log(f"Exported SavedModel to {result['export']}.")
    return result


def _run_config(arch, image_size, dataset, checkpoint):
    """The `run_config.json` of an imported run: the settings that rebuild its networks."""
    return {
        "dataset": dataset,
        "image_size": int(image_size),
        "mean": list(OFFICIAL_MEAN),
        "std": list(OFFICIAL_STD),
        "encoder": f"resnet{arch.depth}",
        "width_multiplier": arch.width_multiplier,
        "cifar_stem": False,
        "projection_dim": arch.projection_dim,
        "hidden_dim": arch.hidden_dim,
        "head_output_bias": False,
        "zero_init_residual": True,
        "num_classes": arch.num_classes,
        "imported_from": os.path.abspath(checkpoint),
    }


# The networks `init_from` copies, online then target (the probe is the new data's own).
_NETWORKS = ("encoder", "projector", "predictor", "target_encoder", "target_projector")


def initialize_from(model, source, log=print) -> None:
    """Copies online and target networks into a built `BYOL` model from `source`.

    Domain-adaptive pretraining: a new run starts from pretrained networks instead of random
    ones. The probe and the optimiser start afresh.

    Args:
        model: the new run's built `BYOL` model.
        source: an official checkpoint (`.pkl`), a byol_tf run folder, or a `.keras` checkpoint.
        log: prints a line.

    Raises:
        ValueError: one line naming `source` when it cannot be read or its networks do not fit
            the model's (the flags that decide the shapes are named).
    """
    from byol_tf.runs import checkpoints

    mismatch = (
        f"--init_from={source}: its networks do not fit the ones these flags build; set "
        "--encoder, --width_multiplier, --hidden_dim, --projection_dim and --head_output_bias "
        "to the source's"
    )
    source = checkpoints.source_checkpoint(source, "--init_from", log)
    if source.endswith(".keras"):
        pretrained = checkpoints.load_checkpoint(source, compile=False)
        for name in _NETWORKS:
            mine, theirs = getattr(model, name), getattr(pretrained, name)
            shapes = [tuple(w.shape) for w in mine.weights]
            if shapes != [tuple(w.shape) for w in theirs.weights]:
                raise ValueError(f"{mismatch} ({name} differs)")
            mine.set_weights(theirs.get_weights())
    else:
        trees, arch = read_checkpoint(source)
        try:
            assign(model, trees, arch, source, probe=False)
        except (CheckpointFormatError, ValueError) as error:
            raise ValueError(f"{mismatch}: {str(error).splitlines()[0]}") from None
    log(f"Initialised the online and target networks from {source}.")
