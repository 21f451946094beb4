"""The host CPU: its model name and feature flags, so that speed figures name the CPU kind."""

import functools
import platform
import subprocess
import sys

CPUINFO = "/proc/cpuinfo"
# Flags that decide how fast a float32 or bfloat16 train step can run on an x86 CPU: vector
# width (avx2, avx512f), int8 / bfloat16 dot products (avx512_vnni, avx512_bf16, avx_vnni) and
# the AMX tile units (amx_tile, amx_bf16, amx_int8) that oneDNN uses for bfloat16 matmuls and
# convolutions on Sapphire Rapids and later.
RELEVANT_FEATURES = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)
BFLOAT16_FEATURES = frozenset({"amx_bf16", "avx512_bf16"})
# Keys of /proc/cpuinfo that name the CPU (x86, then what Arm and other kernels write).
_MODEL_KEYS = ("model name", "hardware", "cpu model", "processor")
_FEATURE_KEYS = ("flags", "features")


def _read(path):
    """The text of `path`, or None when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _fields(text):
    """(lowercase key, value) of each `key : value` line of /proc/cpuinfo text."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            yield key.strip().lower(), value.strip()


def parse_model(text) -> str:
    """The CPU's model name in /proc/cpuinfo text, or "" when it names none.

    Args:
        text: the contents of /proc/cpuinfo.

    Returns:
        The first processor's `model name` (x86), else its `Hardware` or `cpu model` line
        (Arm, MIPS), else a non-numeric `processor` line (older Arm kernels); "" when none.
    """
    fields = {}
    for key, value in _fields(text):
        fields.setdefault(key, value)
    for key in _MODEL_KEYS:
        value = fields.get(key, "")
        if value and not value.isdigit():  # x86's `processor : 0` is an index, not a name
            return value
    return ""


def parse_features(text) -> frozenset[str]:
    """The feature flags every processor in /proc/cpuinfo text has, lowercase.

    Args:
        text: the contents of /proc/cpuinfo (`flags` lines on x86, `Features` on Arm).

    Returns:
        A frozenset of flags; on a machine whose cores differ, those all of them have.
    """
    per_core = [
        frozenset(value.lower().split()) for key, value in _fields(text) if key in _FEATURE_KEYS
    ]
    return frozenset.intersection(*per_core) if per_core else frozenset()


def _sysctl(*names):
    """`sysctl -n NAME...` output (macOS), or "" when it fails."""
    try:
        result = subprocess.run(
            ["sysctl", "-n", *names], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout if result.returncode == 0 else ""


@functools.cache
def cpu_model(cpuinfo=CPUINFO) -> str:
    """The host CPU's model name, e.g. "Intel(R) Xeon(R) Platinum 8480+"; never raises.

    Args:
        cpuinfo: the file to read on Linux.

    Returns:
        The name from /proc/cpuinfo on Linux, `sysctl machdep.cpu.brand_string` on macOS,
        else `platform.processor()`, else "unknown CPU".
    """
    name = ""
    try:
        if sys.platform.startswith("linux"):
            name = parse_model(_read(cpuinfo) or "")
        elif sys.platform == "darwin":
            name = _sysctl("machdep.cpu.brand_string").strip()
        name = name or platform.processor()
    except Exception:  # noqa: BLE001 - a description must never stop a program
        name = ""
    return name or "unknown CPU"


@functools.cache
def cpu_features(cpuinfo=CPUINFO) -> frozenset[str]:
    """The host CPU's feature flags, lowercase, as the kernel names them; never raises.

    Args:
        cpuinfo: the file to read on Linux.

    Returns:
        A frozenset: /proc/cpuinfo's `flags` (x86) or `Features` (Arm) on Linux; on an Intel
        Mac, `sysctl machdep.cpu.features` and `machdep.cpu.leaf7_features` (spelt as macOS
        spells them: "avx2", "avx512f", ...); empty elsewhere or when nothing can be read.
    """
    try:
        if sys.platform.startswith("linux"):
            return parse_features(_read(cpuinfo) or "")
        if sys.platform == "darwin":
            text = _sysctl("machdep.cpu.features", "machdep.cpu.leaf7_features")
            return frozenset(text.lower().split())
    except Exception:  # noqa: BLE001 - a description must never stop a program
        pass
    return frozenset()


def native_bfloat16(features=None) -> bool:
    """Whether the CPU computes bfloat16 dot products in hardware (AMX or AVX-512 BF16).

    Without either, TensorFlow and PyTorch emulate bfloat16 matmuls and convolutions through
    float32, so `mixed_bfloat16` saves memory but rarely time.

    Args:
        features: flags to look at; default `cpu_features()`.

    Returns:
        True when the flags hold `amx_bf16` or `avx512_bf16`.
    """
    features = cpu_features() if features is None else features
    return bool(BFLOAT16_FEATURES & set(features))


def describe(model=None, features=None) -> str:
    """One line naming the CPU and the features that matter for a train step's speed.

    Args:
        model: the CPU's name; default `cpu_model()`.
        features: its flags; default `cpu_features()`.

    Returns:
        E.g. "Intel(R) Xeon(R) Platinum 8480+ (avx2 fma avx512f avx512_vnni avx512_bf16
        amx_tile amx_bf16 amx_int8; native bfloat16)", or "... (none of avx2, ...)".
    """
    model = cpu_model() if model is None else model
    features = cpu_features() if features is None else features
    present = [name for name in RELEVANT_FEATURES if name in features]
    if not present:
        return f"{model} (none of {', '.join(RELEVANT_FEATURES)})"
    bfloat16 = "native bfloat16" if native_bfloat16(features) else "no native bfloat16"
    return f"{model} ({' '.join(present)}; {bfloat16})"
