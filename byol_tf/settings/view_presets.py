"""BYOL's two view distributions T and T' (paper Table 6) as data: `ViewConfig` and presets."""

import dataclasses

from byol_tf.settings.choices import BLUR_PADDINGS, CROP_SAMPLERS

# Images up to this side are "small" (CIFAR, STL-10): no blur, no centre-crop margin.
SMALL_IMAGE_SIZE = 64

# The (low, high) fields of ViewConfig and what they must satisfy.
_RANGES = {
    "crop_area": ("0 < low <= high <= 1", lambda low, high: 0 < low <= high <= 1),
    "crop_aspect": ("0 < low <= high", lambda low, high: 0 < low <= high),
    "blur_sigma": ("0 <= low <= high", lambda low, high: 0 <= low <= high),
}


@dataclasses.dataclass(frozen=True)
class ViewConfig:
    """Parameters of one view distribution; the defaults are the paper's view 1 (T).

    Attributes:
        crop_area: range of the crop's area as a fraction of the image area.
        crop_aspect: range of the crop's width / height, sampled log-uniformly.
        resize_method: "bicubic" (the paper) or "bilinear" (cheaper).
        crop_sampler: "rejection" (redraw until a crop fits, as torchvision) or "clamped"
            (the official code's single draw clamped to the image; see
            `byol_tf.views.image_ops.sample_crop_boxes`).
        flip_prob: probability of a horizontal flip.
        jitter_prob: probability of applying the colour jitter.
        brightness: maximum additive brightness change δ ∈ U[-b, b].
        contrast: contrast factor ∈ U[1 - c, 1 + c] around the per-channel mean.
        saturation: saturation factor ∈ U[1 - s, 1 + s] (HSV).
        hue: hue shift ∈ U[-h, h] as a fraction of the hue circle (HSV).
        greyscale_prob: probability of colour dropping.
        blur_prob: probability of a Gaussian blur.
        blur_sigma: range of the blur's σ in pixels, sampled uniformly.
        blur_kernel_fraction: kernel side as a fraction of the image side (made odd).
        blur_padding: "reflect" (byol_tf's default) or "zero" (the official code's 'SAME'
            convolution, which darkens the borders of a blurred view).
        solarize_prob: probability of solarisation.
        solarize_threshold: pixels at or above it become 1 - x.

    Raises:
        ValueError: for a value out of its range, naming the option and the range expected.
    """

    crop_area: tuple = (0.08, 1.0)
    crop_aspect: tuple = (3 / 4, 4 / 3)
    resize_method: str = "bicubic"
    crop_sampler: str = "rejection"
    flip_prob: float = 0.5
    jitter_prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    greyscale_prob: float = 0.2
    blur_prob: float = 1.0
    blur_sigma: tuple = (0.1, 2.0)
    blur_kernel_fraction: float = 0.1
    blur_padding: str = "reflect"
    solarize_prob: float = 0.0
    solarize_threshold: float = 0.5

    def __post_init__(self) -> None:
        def fail(name, expected):
            raise ValueError(
                f"Augmentation option {name} must be {expected}. "
                f"Received: {name}={getattr(self, name)!r}"
            )

        for name, (expected, valid) in _RANGES.items():
            value = getattr(self, name)
            if not (isinstance(value, (tuple, list)) and len(value) == 2):
                fail(name, f"a range low:high with {expected}")
            if not valid(*(float(v) for v in value)):
                fail(name, f"a range low:high with {expected}")
        for name in ("flip_prob", "jitter_prob", "greyscale_prob", "blur_prob", "solarize_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                fail(name, "a probability in [0, 1]")
        for name in ("brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                fail(name, ">= 0")
        if not 0.0 <= self.hue <= 0.5:
            fail("hue", "in [0, 0.5]")
        if not 0.0 < self.blur_kernel_fraction <= 1.0:
            fail("blur_kernel_fraction", "in (0, 1]")
        if not 0.0 <= self.solarize_threshold <= 1.0:
            fail("solarize_threshold", "in [0, 1]")
        if self.resize_method not in ("bicubic", "bilinear"):
            fail("resize_method", "'bicubic' or 'bilinear'")
        if self.crop_sampler not in CROP_SAMPLERS:
            fail("crop_sampler", " or ".join(repr(s) for s in CROP_SAMPLERS))
        if self.blur_padding not in BLUR_PADDINGS:
            fail("blur_padding", " or ".join(repr(s) for s in BLUR_PADDINGS))


# The presets are data: (view 1, view 2). "small" is the usual 32 px practice: no blur.
PRESETS = {
    "imagenet": (ViewConfig(), ViewConfig(blur_prob=0.1, solarize_prob=0.2)),
    "small": (ViewConfig(blur_prob=0.0), ViewConfig(blur_prob=0.0, solarize_prob=0.2)),
}
_FIELDS = frozenset(f.name for f in dataclasses.fields(ViewConfig))


def view_configs(preset="imagenet", **overrides) -> tuple[ViewConfig, ViewConfig]:
    """Returns the `(view1, view2)` configs of a preset with overrides applied.

    Args:
        preset: "imagenet" or "small".
        **overrides: `ViewConfig` fields. A plain name (`blur_prob=0.5`) sets both views;
            a `view1_`/`view2_` prefix (`view2_solarize_prob=0.0`) sets one view.

    Returns:
        A pair of `ViewConfig`.

    Raises:
        ValueError: for an unknown preset or override name, or a value out of its range
            (naming the option and the range expected).
    """
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}. Received: preset={preset!r}")
    views = []
    for i, config in enumerate(PRESETS[preset], start=1):
        changes = {}
        for key, value in overrides.items():
            name = key.split("_", 1)[1] if key.startswith(("view1_", "view2_")) else key
            if name not in _FIELDS:
                raise ValueError(
                    f"Unknown augmentation option {key!r}; expected one of {sorted(_FIELDS)}, "
                    "optionally prefixed with view1_ or view2_"
                )
            if key == name or key.startswith(f"view{i}_"):
                changes[name] = value
        views.append(dataclasses.replace(config, **changes))
    return tuple(views)


def default_preset(image_size) -> str:
    """The preset for views of a given size.

    Args:
        image_size: side of the views.

    Returns:
        "small" (no blur) up to `SMALL_IMAGE_SIZE` px, else "imagenet".
    """
    return "small" if image_size <= SMALL_IMAGE_SIZE else "imagenet"
