"""extractors.cpu: the text encoder's dtype follows what the hardware computes natively (issue 21)."""

from __future__ import annotations

from pathlib import Path

import pytest

from extractors import registry
from extractors.cpu import Capability, choose_dtype, detect, parse_cpuinfo


def cpuinfo(model: str, flags: str) -> str:
    """Two processors, as /proc/cpuinfo lists them (the first one's lines count)."""
    one = f"processor\t: 0\nvendor_id\t: X\nmodel name\t: {model}\nflags\t\t: {flags}\nbogomips\t: 4000\n\n"
    return one + one.replace("processor\t: 0", "processor\t: 1")


BASE = "fpu vme sse sse2 ssse3 sse4_1 sse4_2 popcnt aes avx f16c fma avx2 bmi2"
# The machine: Zen 2, AVX2 only. Zen 4: AVX512 with BF16. Sapphire Rapids: AMX too. Ice Lake: AVX512, no BF16.
AVX2_ONLY = cpuinfo("AMD EPYC 7B12 64-Core Processor", BASE)
ZEN4 = cpuinfo("AMD EPYC 9B14", f"{BASE} avx512f avx512dq avx512_vnni avx512_bf16 avx512_vbmi2")
SAPPHIRE = cpuinfo("Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz",
                   f"{BASE} avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8 avx512_fp16")
AMX_ONLY = cpuinfo("Intel AMX test part", f"{BASE} amx_bf16 amx_tile")
ICELAKE = cpuinfo("Intel(R) Xeon(R) Platinum 8375C", f"{BASE} avx512f avx512_vnni")


@pytest.mark.parametrize(("text", "want", "why"), [
    (AVX2_ONLY, "float32", "no avx512_bf16"),
    (ICELAKE, "float32", "no avx512_bf16"),
    (ZEN4, "bfloat16", "avx512_bf16"),
    (SAPPHIRE, "bfloat16", "amx_bf16+avx512_bf16"),
    (AMX_ONLY, "bfloat16", "amx_bf16"),
    ("", "float32", "no avx512_bf16"),  # no /proc/cpuinfo to read: the safe choice
])
def test_auto_picks_bfloat16_only_with_native_support(text: str, want: str, why: str) -> None:
    choice = choose_dtype("auto", parse_cpuinfo(text))
    assert choice.dtype == want and why in choice.reason


def test_cuda_with_bfloat16_picks_bfloat16_whatever_the_host() -> None:
    cap = Capability("NVIDIA H100", parse_cpuinfo(AVX2_ONLY).flags, cuda_bf16=True)
    assert choose_dtype("auto", cap).dtype == "bfloat16" and "CUDA" in choose_dtype("auto", cap).reason
    assert "CUDA" in cap.describe() and "native bfloat16" in cap.describe()


def test_explicit_dtype_and_validated_precision() -> None:
    avx2, zen4 = parse_cpuinfo(AVX2_ONLY), parse_cpuinfo(ZEN4)
    assert choose_dtype("float32", zen4).dtype == "float32"
    forced = choose_dtype("bfloat16", avx2)
    assert forced.dtype == "bfloat16" and "slower" in forced.reason  # allowed, but said
    assert choose_dtype("auto", zen4, validated="float32").dtype == "float32"  # never below what was validated
    with pytest.raises(ValueError, match="auto, float32, bfloat16"):
        choose_dtype("int8", zen4)


def test_parse_and_describe() -> None:
    cap = parse_cpuinfo(SAPPHIRE)
    assert cap.model == "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"
    assert cap.shown_flags == ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    assert cap.describe().endswith("; native bfloat16)")
    assert parse_cpuinfo(AVX2_ONLY).describe() == "AMD EPYC 7B12 64-Core Processor (avx2 fma; no native bfloat16)"


def test_detect_reads_the_file_and_survives_its_absence(tmp_path: Path) -> None:
    (tmp_path / "cpuinfo").write_text(ZEN4)
    assert detect(tmp_path / "cpuinfo").native_bf16
    assert not detect(tmp_path / "absent").flags


def test_registry_lists_what_auto_picks_without_loading() -> None:
    avx2, zen4 = parse_cpuinfo(AVX2_ONLY), parse_cpuinfo(ZEN4)
    by = {cap: {i.name: i.dtype for i in registry.available(capability=cap)} for cap in (avx2, zen4)}
    assert by[avx2]["mpnet-base-meld"] == "float32" and by[zen4]["mpnet-base-meld"] == "bfloat16"
    assert by[zen4]["minilm-l6"] == by[zen4]["minilm-l6-meld"] == "float32"  # validated in float32 only
    assert by[zen4]["vader"] is None and by[zen4]["minilm-l6+lex"] == "float32"
    assert registry.auto_dtype("mpnet-base-meld+minilm-l6-meld-ctx", zen4) == "bfloat16+float32"
