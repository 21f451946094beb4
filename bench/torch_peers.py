"""PyTorch peers for the benchmarks: CIFAR ResNet-18, byol-pytorch and a hand-written BYOL step."""

import copy
import time

# torch, torchvision and byol_pytorch are imported inside the functions that need them, so that
# the FLOP arithmetic and the NumPy matmul rate work where PyTorch is not installed.

_STAGE_BLOCKS = (2, 2, 2, 2)


def stage_widths(width_multiplier=1.0):
    """Channel counts of the four ResNet-18 stages, rounded as `byol_tf.core.networks.resnet` does.

    Args:
        width_multiplier: multiplies every layer's channel count (1.0 is the standard network).

    Returns:
        A tuple of four ints; the last one is the dimension of the pooled representation.
    """
    return tuple(max(int(round(64 * width_multiplier * 2**stage)), 1) for stage in range(4))


def resnet18_cifar(width_multiplier=1.0):
    """ResNet-18 v1 with the CIFAR stem (3×3 conv, stride 1, no max-pool), pooled output.

    At width 1 this is torchvision's `resnet18` with `conv1` replaced, `maxpool` and `fc` set to
    identities; other widths rebuild the same layout from torchvision's `BasicBlock`.

    Args:
        width_multiplier: multiplies every layer's channel count.

    Returns:
        A `torch.nn.Module` mapping `(N, 3, H, W)` images to `(N, stage_widths()[-1])` features.
    """
    from torch import nn
    from torchvision.models import resnet18
    from torchvision.models.resnet import BasicBlock

    widths = stage_widths(width_multiplier)
    net = resnet18(weights=None)
    net.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    if width_multiplier != 1.0:
        net.bn1 = nn.BatchNorm2d(widths[0])
        in_channels = widths[0]
        for stage, (width, blocks) in enumerate(zip(widths, _STAGE_BLOCKS, strict=True)):
            stride = 1 if stage == 0 else 2
            layer = []
            for index in range(blocks):
                downsample = None
                if index == 0 and (stride != 1 or in_channels != width):
                    downsample = nn.Sequential(
                        nn.Conv2d(in_channels, width, 1, stride=stride, bias=False),
                        nn.BatchNorm2d(width),
                    )
                layer.append(
                    BasicBlock(in_channels, width, stride if index == 0 else 1, downsample)
                )
                in_channels = width
            setattr(net, f"layer{stage + 1}", nn.Sequential(*layer))
        for module in net.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return net


def mlp_head(input_dim, hidden_dim=4096, output_dim=256):
    """Projector / predictor of the paper: Linear → BatchNorm → ReLU → Linear.

    Args:
        input_dim: size of the input vector.
        hidden_dim: width of the hidden layer.
        output_dim: size of the output vector.

    Returns:
        A `torch.nn.Sequential`.
    """
    from torch import nn

    return nn.Sequential(
        nn.Linear(input_dim, hidden_dim),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, output_dim),
    )


def make_byol_pytorch(
    net,
    image_size=32,
    projection_dim=256,
    hidden_dim=4096,
    moving_average_decay=0.99,
    augment=False,
    learning_rate=3e-4,
    autocast_dtype=None,
):
    """Builds byol-pytorch's `BYOL` learner around `net` and one full optimiser step.

    Plain BYOL: `use_simplicial_embeddings=False` where the installed version has that argument
    (its default is True since 0.9). With `augment=False` an identity replaces its augmentation so
    that a benchmark times the step alone. The optimiser is Adam, as its README documents.
    Note that byol-pytorch concatenates the two views into one batch (BatchNorm statistics over
    both views together), and its augmentation draws one set of parameters per batch.

    Args:
        net: encoder mapping images to a flat vector; used as the hidden layer (`hidden_layer=-1`).
        image_size: side of the square input images.
        projection_dim: output size of the projector and predictor.
        hidden_dim: hidden width of the projector and predictor.
        moving_average_decay: EMA decay τ of the target network.
        augment: keep byol-pytorch's default augmentation instead of an identity.
        learning_rate: Adam learning rate.
        autocast_dtype: e.g. `torch.bfloat16`: the forward passes run under
            `torch.autocast("cpu", dtype=...)` (mixed precision; parameters stay float32).

    Returns:
        `(learner, step)`: the `BYOL` module and `step(images) -> float tensor loss` that runs the
        forward pass, backward pass, optimiser update and `update_moving_average()`.
    """
    import inspect

    import torch
    from byol_pytorch import BYOL
    from torch import nn

    kwargs = {
        "image_size": image_size,
        "hidden_layer": -1,
        "projection_size": projection_dim,
        "projection_hidden_size": hidden_dim,
        "moving_average_decay": moving_average_decay,
    }
    if "use_simplicial_embeddings" in inspect.signature(BYOL).parameters:
        kwargs["use_simplicial_embeddings"] = False
    if not augment:
        kwargs["augment_fn"] = nn.Identity()
    learner = BYOL(net, **kwargs)
    optimizer = torch.optim.Adam(learner.parameters(), lr=learning_rate)

    def step(images):
        with _autocast(autocast_dtype):
            loss = learner(images)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        learner.update_moving_average()
        return loss.detach()

    return learner, step


def _autocast(dtype):
    """`torch.autocast("cpu", dtype)`, or a context that changes nothing when `dtype` is None."""
    import contextlib

    import torch

    return contextlib.nullcontext() if dtype is None else torch.autocast("cpu", dtype=dtype)


def _regression_loss(prediction, target):
    """2 − 2·cos(p, z') per example; `(N, D), (N, D) -> (N,)`."""
    import torch.nn.functional as F

    return 2.0 - 2.0 * (F.normalize(prediction, dim=-1) * F.normalize(target, dim=-1)).sum(-1)


def make_handwritten_byol(encoder, feature_dim, projection_dim=256, hidden_dim=4096):
    """Hand-written BYOL in plain PyTorch: the same network and loss as byol_tf.

    Each view is forwarded separately (BatchNorm statistics per view, both networks in training
    mode), the symmetric loss sums both orderings and averages over the batch, and the target
    (encoder + projector) is a deep copy that never receives gradients.

    Args:
        encoder: online encoder mapping images to `(N, feature_dim)`.
        feature_dim: size of the encoder's output.
        projection_dim: output size of the projector and predictor.
        hidden_dim: hidden width of the projector and predictor.

    Returns:
        A `torch.nn.Module` with `online` (encoder → projector), `predictor`, `target`,
        `loss(view1, view2)` and `update_target(tau)`.
    """
    import torch
    from torch import nn

    class HandwrittenBYOL(nn.Module):
        """Online network, predictor and EMA target."""

        def __init__(self):
            super().__init__()
            self.online = nn.Sequential(encoder, mlp_head(feature_dim, hidden_dim, projection_dim))
            self.predictor = mlp_head(projection_dim, hidden_dim, projection_dim)
            self.target = copy.deepcopy(self.online)
            self.target.requires_grad_(False)

        def loss(self, view1, view2):
            p1 = self.predictor(self.online(view1))
            p2 = self.predictor(self.online(view2))
            with torch.no_grad():  # the target only provides regression targets
                z1 = self.target(view1)
                z2 = self.target(view2)
            return (_regression_loss(p1, z2) + _regression_loss(p2, z1)).mean()

        @torch.no_grad()
        def update_target(self, tau):
            online = [p.detach() for p in self.online.parameters()]
            torch._foreach_lerp_(list(self.target.parameters()), online, 1.0 - tau)

    return HandwrittenBYOL()


def make_handwritten_step(model, learning_rate=0.05, momentum=0.9, tau=0.99, autocast_dtype=None):
    """One optimiser step of `make_handwritten_byol`'s model: SGD with momentum, then the EMA.

    Args:
        model: the module returned by `make_handwritten_byol`.
        learning_rate: SGD learning rate.
        momentum: SGD momentum.
        tau: EMA decay of the target.
        autocast_dtype: as `make_byol_pytorch`'s: the forward passes under `torch.autocast`.

    Returns:
        `step(view1, view2) -> loss tensor`.
    """
    import torch

    params = list(model.online.parameters()) + list(model.predictor.parameters())
    optimizer = torch.optim.SGD(params, lr=learning_rate, momentum=momentum)

    def step(view1, view2):
        with _autocast(autocast_dtype):
            loss = model.loss(view1, view2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        model.update_target(tau)
        return loss.detach()

    return step


def _conv_macs(size, in_channels, out_channels, kernel, stride):
    """MACs of a 'same'-padded conv on a `size`² input; returns `(macs, output size)`."""
    out = -(-size // stride)
    return out * out * out_channels * in_channels * kernel * kernel, out


def encoder_macs(image_size=32, width_multiplier=1.0):
    """Multiply-accumulates of one forward pass of the CIFAR ResNet-18 for one image.

    Args:
        image_size: side of the square input.
        width_multiplier: channel multiplier of the network.

    Returns:
        `(total_macs, stem_macs)`; the stem's input gradient is never computed in a backward pass.
    """
    widths = stage_widths(width_multiplier)
    stem, size = _conv_macs(image_size, 3, widths[0], 3, 1)
    total, in_channels = stem, widths[0]
    for stage, (width, blocks) in enumerate(zip(widths, _STAGE_BLOCKS, strict=True)):
        for index in range(blocks):
            stride = 2 if (stage > 0 and index == 0) else 1
            if stride != 1 or in_channels != width:
                total += _conv_macs(size, in_channels, width, 1, stride)[0]
            macs, out = _conv_macs(size, in_channels, width, 3, stride)
            total += macs + _conv_macs(out, width, width, 3, 1)[0]
            size, in_channels = out, width
    return total, stem


def byol_step_flops(
    batch_size, image_size=32, width_multiplier=1.0, projection_dim=256, hidden_dim=4096
):
    """Analytic FLOPs (2 per MAC, convolutions and dense layers only) of one BYOL training step.

    The step is: online encoder + projector + predictor forward and backward for both views
    (backward = 2× forward, less the stem's input gradient) and the target encoder + projector
    forward for both views. BatchNorm, activations, the loss, the optimiser and the EMA are
    elementwise and left out, as FLOP counters usually do.

    Args:
        batch_size: images per view.
        image_size: side of the square input.
        width_multiplier: channel multiplier of the network.
        projection_dim: output size of the projector and predictor.
        hidden_dim: hidden width of the projector and predictor.

    Returns:
        FLOPs of one step, an int.
    """
    encoder, stem = encoder_macs(image_size, width_multiplier)
    feature_dim = stage_widths(width_multiplier)[-1]
    projector = feature_dim * hidden_dim + hidden_dim * projection_dim
    predictor = projection_dim * hidden_dim + hidden_dim * projection_dim
    online = encoder + projector + predictor
    target = encoder + projector
    per_image_view = 3 * online - stem + target
    return 2 * 2 * batch_size * per_image_view


def count_flops(fn, *args):
    """FLOPs that `torch.utils.flop_counter.FlopCounterMode` counts while `fn(*args)` runs.

    Args:
        fn: a callable, e.g. a training step (it does run, once).
        *args: its arguments.

    Returns:
        The counted FLOPs (matmul and convolution operations, forward and backward), an int.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn(*args)
    return counter.get_total_flops()


def matmul_gflops(library="numpy", size=2048, repeats=5, dtype="float32"):
    """Best square-matmul rate of `repeats` timed runs, in GFLOP/s.

    Args:
        library: "numpy" or "torch".
        size: side of the square matrices.
        repeats: number of timed runs (after one untimed warm-up).
        dtype: "float32", or "bfloat16" (torch only: NumPy has no bfloat16).

    Returns:
        GFLOP/s of the fastest run (2·size³ FLOPs each).

    Raises:
        ValueError: for an unknown library, or bfloat16 in NumPy.
    """
    if library == "numpy" and dtype == "float32":
        import numpy as np

        rng = np.random.default_rng(0)
        a = rng.standard_normal((size, size), dtype=np.float32)
        b = rng.standard_normal((size, size), dtype=np.float32)
        matmul = np.matmul
    elif library == "torch":
        import torch

        generator = torch.Generator().manual_seed(0)
        a = torch.randn(size, size, generator=generator).to(getattr(torch, dtype))
        b = torch.randn(size, size, generator=generator).to(getattr(torch, dtype))
        matmul = torch.mm
    else:
        raise ValueError(
            "library must be 'numpy' (float32) or 'torch'. "
            f"Received: library={library!r}, dtype={dtype!r}"
        )
    matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best / 1e9
