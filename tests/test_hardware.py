"""byol_tf.training.hardware: CPU model and feature flags read from /proc/cpuinfo samples."""

import sys

import pytest

from byol_tf.training import hardware

# Abridged /proc/cpuinfo of real machines: two logical processors each, every line as the
# kernel writes it (tab before the colon), the flags lists cut to a representative part.
SAPPHIRE_RAPIDS = """\
processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8480+
stepping\t: 8
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr sse sse2 ssse3 fma cx16 sse4_1 \
sse4_2 avx f16c avx2 bmi1 bmi2 avx512f avx512dq avx512cd avx512bw avx512vl avx_vnni avx512_bf16 \
avx512_vbmi avx512_vnni avx512_bitalg avx512_vpopcntdq amx_bf16 avx512_fp16 amx_tile amx_int8
bugs\t\t: spectre_v1 spectre_v2

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr sse sse2 ssse3 fma cx16 sse4_1 \
sse4_2 avx f16c avx2 bmi1 bmi2 avx512f avx512dq avx512cd avx512bw avx512vl avx_vnni avx512_bf16 \
avx512_vbmi avx512_vnni avx512_bitalg avx512_vpopcntdq amx_bf16 avx512_fp16 amx_tile amx_int8
"""
EPYC_ZEN4 = """\
processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9654 96-Core Processor
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr sse sse2 ssse3 fma cx16 sse4_1 \
sse4_2 avx f16c avx2 bmi1 bmi2 avx512f avx512dq avx512ifma avx512cd avx512bw avx512vl \
avx512_bf16 avx512vbmi avx512_vbmi2 avx512_vnni avx512_bitalg avx512_vpopcntdq

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9654 96-Core Processor
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr sse sse2 ssse3 fma cx16 sse4_1 \
sse4_2 avx f16c avx2 bmi1 bmi2 avx512f avx512dq avx512ifma avx512cd avx512bw avx512vl \
avx512_bf16 avx512vbmi avx512_vbmi2 avx512_vnni avx512_bitalg avx512_vpopcntdq
"""
BROADWELL = """\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr sse sse2 ssse3 fma cx16 sse4_1 \
sse4_2 avx f16c rdrand avx2 bmi1 bmi2

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr sse sse2 ssse3 fma cx16 sse4_1 \
sse4_2 avx f16c rdrand avx2 bmi1 bmi2
"""
GRAVITON3 = """\
processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid sve bf16 i8mm
CPU implementer\t: 0x41
"""


def _cpuinfo(tmp_path, text):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return str(path)


@pytest.fixture(autouse=True)
def _linux(monkeypatch):
    # The readers take /proc/cpuinfo on Linux only; the samples stand in for it anywhere.
    monkeypatch.setattr(sys, "platform", "linux")
    hardware.cpu_model.cache_clear()
    hardware.cpu_features.cache_clear()
    yield
    hardware.cpu_model.cache_clear()
    hardware.cpu_features.cache_clear()


def test_sapphire_rapids_has_amx_and_native_bfloat16(tmp_path):
    path = _cpuinfo(tmp_path, SAPPHIRE_RAPIDS)
    assert hardware.cpu_model(path) == "Intel(R) Xeon(R) Platinum 8480+"
    features = hardware.cpu_features(path)
    assert {"amx_bf16", "amx_tile", "amx_int8", "avx512_bf16", "avx512f", "avx2"} <= features
    assert "amx_bf16 " not in features and "" not in features  # split on whitespace, no blanks
    assert hardware.native_bfloat16(features)
    assert hardware.describe(hardware.cpu_model(path), features) == (
        "Intel(R) Xeon(R) Platinum 8480+ (avx2 fma avx512f avx512_vnni avx_vnni avx512_bf16 "
        "amx_tile amx_bf16 amx_int8; native bfloat16)"
    )


def test_epyc_zen4_has_avx512_bf16_without_amx(tmp_path):
    path = _cpuinfo(tmp_path, EPYC_ZEN4)
    assert hardware.cpu_model(path) == "AMD EPYC 9654 96-Core Processor"
    features = hardware.cpu_features(path)
    assert "avx512_bf16" in features and "avx512_vnni" in features
    assert not {"amx_bf16", "amx_tile"} & features
    assert hardware.native_bfloat16(features)
    assert hardware.describe("AMD EPYC 9654 96-Core Processor", features) == (
        "AMD EPYC 9654 96-Core Processor (avx2 fma avx512f avx512_vnni avx512_bf16; "
        "native bfloat16)"
    )


def test_old_cpu_without_bfloat16_units(tmp_path):
    path = _cpuinfo(tmp_path, BROADWELL)
    assert hardware.cpu_model(path) == "Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz"
    features = hardware.cpu_features(path)
    assert {"avx2", "fma", "sse4_2"} <= features
    assert "avx512f" not in features
    assert not hardware.native_bfloat16(features)
    assert hardware.describe("E5-2680 v4", features) == "E5-2680 v4 (avx2 fma; no native bfloat16)"


def test_missing_cpuinfo_gives_no_features_and_no_error(tmp_path):
    path = str(tmp_path / "absent")
    assert hardware.cpu_features(path) == frozenset()
    assert isinstance(hardware.cpu_model(path), str) and hardware.cpu_model(path)
    assert not hardware.native_bfloat16(frozenset())
    assert hardware.describe("some CPU", frozenset()) == (
        "some CPU (none of avx2, fma, avx512f, avx512_vnni, avx_vnni, avx512_bf16, amx_tile, "
        "amx_bf16, amx_int8)"
    )


def test_features_common_to_every_core_of_a_mixed_machine():
    text = "processor\t: 0\nflags\t\t: sse avx2 avx512f\n\nprocessor\t: 1\nflags\t\t: sse avx2\n"
    assert hardware.parse_features(text) == frozenset({"sse", "avx2"})


def test_arm_features_are_read_from_the_features_line():
    features = hardware.parse_features(GRAVITON3)
    assert {"sve", "bf16", "i8mm"} <= features
    assert not hardware.native_bfloat16(features)  # Arm's bf16 is not one of the x86 units
    assert hardware.parse_model(GRAVITON3) == ""  # no model line: the caller falls back


def test_index_lines_are_not_taken_for_a_model_name():
    assert hardware.parse_model("processor\t: 0\nvendor_id\t: GenuineIntel\n") == ""
    old_arm = "Processor\t: ARMv7 Processor rev 10 (v7l)\nprocessor\t: 0\n"
    assert hardware.parse_model(old_arm) == "ARMv7 Processor rev 10 (v7l)"


def test_readers_outside_linux_and_macos_return_empty_features(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "platform", "win32")
    assert hardware.cpu_features(_cpuinfo(tmp_path, SAPPHIRE_RAPIDS)) == frozenset()
    assert hardware.cpu_model(_cpuinfo(tmp_path, SAPPHIRE_RAPIDS))  # platform's name or fallback


def test_this_machine_is_described_in_one_line():
    line = hardware.describe()
    assert "\n" not in line and line.startswith(hardware.cpu_model())
