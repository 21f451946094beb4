"""DeepMind's official BYOL checkpoints as byol_tf networks: mapping, import, `--init_from`.

`byol_tf.official_pickle` reads a checkpoint without running code from it; here its Haiku
modules become the layers of a `BYOL` model (`res_net50/block_group_0/block_0/conv_0` is
`encoder/stage1_block1_conv1`, `projector/linear` is `projector/hidden`, ...), which
`import_checkpoint` writes as a run folder or a SavedModel. docs/official_weights.md describes
the mapping.
"""

import collections
import os
import re

import numpy as np

from byol_tf.image_ops import IMAGENET_MEAN, IMAGENET_STD
from byol_tf.official_pickle import EXPECTED_FORMAT, CheckpointFormatError, load_official

# The official input normalisation (byol/utils/dataset.py: images in [0, 1], ImageNet statistics).
OFFICIAL_MEAN, OFFICIAL_STD = IMAGENET_MEAN, IMAGENET_STD
# The depths of the official code's ResNets (byol/utils/networks.py): bottleneck blocks.
_DEPTHS = (50, 101, 152, 200)


class Architecture(collections.namedtuple(
    "Architecture",
    "encoder depth width_multiplier projection_dim hidden_dim num_classes stem_width",
    defaults=(None,),
)):  # fmt: skip
    """What an official checkpoint holds: `resnet<depth>` at a width, heads and classifier.

    `encoder` is the Haiku module name of the ResNet (`res_net50`); `width_multiplier` is the
    blocks' (their output channels over 256, 512, 1024, 2048); `stem_width` the stem's
    channels when they are not 64 × the multiplier (the official code before its fix of
    2020-08-17 kept a 64-channel stem at every width), else None; `num_classes` is None when
    the checkpoint has no classifier.
    """


# Module names that occur once in the official network: a re-created Haiku module of that name
# is written with a numeric suffix (`initial_conv_1`), which stands for the name itself.
_SINGLE = (
    r"initial_conv|initial_batchnorm|shortcut_conv|shortcut_batchnorm|batch_norm|"
    r"projector|predictor|classifier|res_net\d+"
)
# Indexed module names (`block_3`, `conv_1`): a suffix after the index is a re-created one.
_INDEXED = r"block_group_\d+|block_\d+|conv_\d+|batchnorm_\d+"
_RECREATED = re.compile(rf"^({_SINGLE}|{_INDEXED})_\d+$")


def _base_name(module):
    """`module` without the suffix Haiku gives a re-created module, part by part."""
    return "/".join(_RECREATED.sub(r"\1", part) for part in module.split("/"))


def canonical_names(trees, path="checkpoint"):
    """`trees` (what `load_official` returns) with every re-created module named as the module
    itself: `res_net50/initial_conv_1` becomes `res_net50/initial_conv`.

    Raises:
        CheckpointFormatError: naming `path` and both modules, when a module and a re-created
            one of the same name both hold parameters.
    """
    renamed = dict(trees)
    for field in ("online_params", "target_params", "online_state", "target_state"):
        tree = {}
        for module, values in trees[field].items():
            base = _base_name(module)
            if base in tree:
                first = next(m for m in trees[field] if _base_name(m) == base)
                raise CheckpointFormatError(
                    f"{path}: both {first} and {module} in its {field}; one network has one {base}"
                )
            tree[base] = values
        renamed[field] = tree
    return renamed


def _channels(params, module):
    return int(params[module]["w"].shape[-1])


def architecture(params, path="checkpoint"):
    """Infers depth, widths and head sizes from the online parameters of an official checkpoint
    (named as `canonical_names` names them).

    Raises:
        CheckpointFormatError: one line naming `path` and the first module that does not fit
            the official ResNet v1 with projector and predictor.
    """
    encoders = sorted({n.split("/")[0] for n in params if re.match(r"res_net\d+/", n)})
    if len(encoders) != 1 or f"{encoders[0]}/initial_conv" not in params:
        raise CheckpointFormatError(
            f"{path}: no official ResNet encoder (res_net50/initial_conv, ...) among its "
            f"parameters (found {sorted(params)[:4]}...); expected {EXPECTED_FORMAT}"
        )
    from byol_tf.networks import STAGES

    encoder = encoders[0]
    blocks = []
    for group in range(4):
        prefix = f"{encoder}/block_group_{group}/block_"
        blocks.append(len({n[len(prefix) :].split("/")[0] for n in params if n.startswith(prefix)}))
    depth = next((d for d in _DEPTHS if STAGES[d] == tuple(blocks)), None)
    if depth is None:
        group = next((g for g in range(4) if blocks[g] not in {STAGES[d][g] for d in _DEPTHS}), 3)
        raise CheckpointFormatError(
            f"{path}: {encoder}/block_group_{group} has {blocks[group]} blocks (blocks per group "
            f"{tuple(blocks)}), which fits no official ResNet (ResNet-50 3-4-6-3, ResNet-101 "
            "3-4-23-3, ResNet-152 3-8-36-3, ResNet-200 3-24-36-3)"
        )
    try:
        first_block = f"{encoder}/block_group_0/block_0/conv_2"
        width = _channels(params, first_block) / 256
        stem = _channels(params, f"{encoder}/initial_conv")
        projector = params["projector/linear"]["w"].shape
        projection_dim = _channels(params, "projector/linear_1")
        predictor_hidden = _channels(params, "predictor/linear")
    except KeyError as error:
        raise CheckpointFormatError(
            f"{path}: no {error.args[0]} among its parameters; expected {EXPECTED_FORMAT}"
        ) from None
    if projector[-1] != predictor_hidden:
        raise CheckpointFormatError(
            f"{path}: predictor/linear has {predictor_hidden} outputs, projector/linear "
            f"{projector[-1]}; the official heads have one hidden width"
        )
    classifier = params.get("classifier", {}).get("w")
    return Architecture(
        encoder,
        depth,
        width,
        projection_dim,
        int(projector[-1]),
        None if classifier is None else int(classifier.shape[-1]),
        None if stem == max(int(round(64 * width)), 1) else stem,
    )


def read_checkpoint(path):
    """Reads an official checkpoint and the architecture it holds.

    Returns:
        `(trees, arch)`: what `load_official` returns, with the names of `canonical_names`,
        and what `architecture` infers.

    Raises:
        CheckpointFormatError: one line naming `path`: not an official checkpoint, or one
            with a module that fits no official network (the module is named).
    """
    trees = canonical_names(load_official(path), path)
    arch = architecture(trees["online_params"], path)
    names = expected_names(arch)
    unknown = sorted(set(trees["online_params"]) - set(names))
    if unknown:
        raise CheckpointFormatError(
            f"{path}: {unknown[0]} is no module of the official ResNet-{arch.depth} with "
            f"projector, predictor and classifier ({len(unknown)} such module(s))"
        )
    return trees, arch


def expected_names(arch):
    """`{Haiku parameter module: Keras layer path}` of the online network of `arch`.

    Keras paths are `(network, layer)`: network is `encoder`, `projector`, `predictor` or
    `probe`. The same names, with the target network's trees, give the target's layers.
    """
    from byol_tf.networks import STAGES

    names = {
        f"{arch.encoder}/initial_conv": ("encoder", "stem_conv"),
        f"{arch.encoder}/initial_batchnorm": ("encoder", "stem_bn"),
    }
    for group, count in enumerate(STAGES[arch.depth]):
        for block in range(count):
            haiku = f"{arch.encoder}/block_group_{group}/block_{block}"
            keras = f"stage{group + 1}_block{block + 1}"
            if block == 0:  # the official code projects in the first block of every group
                names[f"{haiku}/shortcut_conv"] = ("encoder", f"{keras}_proj")
                names[f"{haiku}/shortcut_batchnorm"] = ("encoder", f"{keras}_proj_bn")
            for i in range(3):
                names[f"{haiku}/conv_{i}"] = ("encoder", f"{keras}_conv{i + 1}")
                names[f"{haiku}/batchnorm_{i}"] = ("encoder", f"{keras}_bn{i + 1}")
    for head in ("projector", "predictor"):
        names[f"{head}/linear"] = (head, "hidden")
        names[f"{head}/batch_norm"] = (head, "hidden_bn")
        names[f"{head}/linear_1"] = (head, "output")
    if arch.num_classes:
        names["classifier"] = ("probe", None)
    return names


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


def network_weights(trees, arch, path="checkpoint", target=False):
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


def encoder_channels(params, arch):
    """`{Keras convolution: output channels}` of the encoder, as the file's kernels have them.

    Every width is read from the file: a stem narrower than the blocks, or a block group whose
    width does not follow the multiplier, is built as the file has it.
    """
    return {
        layer: _channels(params, module)
        for module, (network, layer) in expected_names(arch).items()
        if network == "encoder" and module in params and "w" in params[module]
    }


def build_model(arch, image_size=224, channels=None):
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
    from byol_tf import networks
    from byol_tf.model import BYOL

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


def assign(model, trees, arch, path="checkpoint", probe=True):
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
):
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
    from byol_tf import checkpoints, export, run_dir

    if model_dir:
        run_dir.prepare_folder(model_dir, "--model_dir")
        if checkpoints.list_checkpoints(model_dir):
            raise ValueError(
                f"--model_dir={model_dir} already holds a run's checkpoints; import into a new "
                "folder"
            )
    if export_dir:
        run_dir.prepare_folder(export_dir, "--export_dir")
    trees, arch = read_checkpoint(checkpoint)
    log(
        f"{checkpoint}: ResNet-{arch.depth} ×{arch.width_multiplier:g}"
        + (f" (a stem of {arch.stem_width} channels)" if arch.stem_width else "")
        + f" at step {trees['step']}, heads {arch.hidden_dim}→{arch.projection_dim}, "
        f"classifier of {arch.num_classes or 'no'} classes."
    )
    model = build_model(arch, image_size, encoder_channels(trees["online_params"], arch))
    assign(model, trees, arch, checkpoint)
    result = {"architecture": arch._asdict(), "step": trees["step"], "checkpoint": None}
    if model_dir:
        result["checkpoint"] = checkpoints.save_checkpoint(model, model_dir, trees["step"])
        run_config = _run_config(arch, image_size, dataset, checkpoint)
        if manual_dir:
            run_config["manual_dir"] = manual_dir
        run_dir.write_run_config(model_dir, run_config)
        log(f"Wrote {result['checkpoint']} and {run_dir.RUN_CONFIG}.")
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


def initialize_from(model, source, log=print):
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
    from byol_tf import checkpoints

    mismatch = (
        f"--init_from={source}: its networks do not fit the ones these flags build; set "
        "--encoder, --width_multiplier, --hidden_dim, --projection_dim and --head_output_bias "
        "to the source's"
    )
    if os.path.isdir(source):
        path = checkpoints.latest_readable(source, log)
        if path is None:
            raise ValueError(f"--init_from={source}: no checkpoint in {source}/checkpoints")
        source = path
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
