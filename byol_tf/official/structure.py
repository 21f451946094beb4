"""Internal: what an official BYOL checkpoint holds, read from its module names and shapes.

The ResNet's depth and widths, the heads' sizes and the classifier (`Architecture`), the module
names of re-created Haiku modules (`initial_conv_1`) read as the modules themselves, the Keras
layer each module maps to (`expected_names`), and the one-line refusals of a file that fits no
official network. Nothing here builds a network: `byol_tf.official.importer` does, from what
this reads.
"""

import collections
import re
from typing import Any

from byol_tf.official.reader import EXPECTED_FORMAT, CheckpointFormatError, load_official

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


def canonical_names(trees, path="checkpoint") -> dict[str, Any]:
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


def architecture(params, path="checkpoint") -> Architecture:
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
    from byol_tf.core.networks import STAGES

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


def read_checkpoint(path) -> tuple[dict[str, Any], Architecture]:
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


def expected_names(arch) -> dict[str, tuple[str, str | None]]:
    """`{Haiku parameter module: Keras layer path}` of the online network of `arch`.

    Keras paths are `(network, layer)`: network is `encoder`, `projector`, `predictor` or
    `probe`. The same names, with the target network's trees, give the target's layers.
    """
    from byol_tf.core.networks import STAGES

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


def encoder_channels(params, arch) -> dict[str, int]:
    """`{Keras convolution: output channels}` of the encoder, as the file's kernels have them.

    Every width is read from the file: a stem narrower than the blocks, or a block group whose
    width does not follow the multiplier, is built as the file has it.
    """
    return {
        layer: _channels(params, module)
        for module, (network, layer) in expected_names(arch).items()
        if network == "encoder" and module in params and "w" in params[module]
    }
