"""What this CPU can do fast, and the text encoder's dtype that follows from it (decided once, at load).

Why: bfloat16 matmuls are fast only where the hardware has them (AVX512-BF16, AMX-BF16, a CUDA GPU);
elsewhere oneDNN emulates them and all-mpnet-base-v2 runs ~2.8x *slower* than in float32 (175 vs 63 ms per
utterance on an AVX2-only AMD EPYC, issue 21). So ``auto`` picks bfloat16 only on such hardware and only
for an encoder validated in bfloat16. The decision is a pure function of a :class:`Capability`, which is
parsed from ``/proc/cpuinfo`` text, so every CPU class is unit-testable on any machine.

    python -m extractors.cpu      # prints the CPU, its flags of interest and the dtype ``auto`` picks
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DTYPES = ("float32", "bfloat16")
CHOICES = ("auto", *DTYPES)
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # native bfloat16 dot products on x86
# What decides the speed of our encoders, shown in logs and benchmark headers.
FLAGS_OF_INTEREST = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


@dataclass(frozen=True)
class Capability:
    """The CPU (or device) the text encoder runs on: model name, its /proc/cpuinfo flags, and whether it is
    a CUDA device with bfloat16 support."""

    model: str
    flags: frozenset[str]
    cuda_bf16: bool = False

    @property
    def native_bf16(self) -> bool:
        return self.cuda_bf16 or bool(self.flags & BF16_FLAGS)

    @property
    def shown_flags(self) -> tuple[str, ...]:
        return tuple(f for f in FLAGS_OF_INTEREST if f in self.flags)

    def describe(self) -> str:
        """One line: ``AMD EPYC (avx2 fma avx512f avx512_vnni avx512_bf16; native bfloat16)``."""
        kind = "native bfloat16" if self.native_bf16 else "no native bfloat16"
        dev = "CUDA, " if self.cuda_bf16 else ""
        return f"{self.model} ({dev}{' '.join(self.shown_flags) or 'no flags of interest'}; {kind})"


@dataclass(frozen=True)
class DtypeChoice:
    """The dtype an encoder runs in and why (shown in the startup log, `pcgnet extractors`, status, benchmarks)."""

    dtype: str
    reason: str


def parse_cpuinfo(text: str) -> Capability:
    """A :class:`Capability` from ``/proc/cpuinfo`` text (the first processor's model name and flags)."""
    model, flags = "unknown CPU", frozenset[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == "unknown CPU":
            model = " ".join(value.split()) or model
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    return Capability(model, flags)


def detect(cpuinfo: Path = Path("/proc/cpuinfo")) -> Capability:
    """This machine's CPU (no CUDA: the text encoders run on the CPU). Without /proc/cpuinfo (not Linux)
    the flags are unknown, so ``auto`` stays on float32, the safe choice everywhere."""
    try:
        return parse_cpuinfo(cpuinfo.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return Capability(os.uname().machine if hasattr(os, "uname") else "unknown CPU", frozenset())


def choose_dtype(requested: str, capability: Capability, validated: str = "bfloat16") -> DtypeChoice:
    """The dtype to run an encoder in.

    ``requested``: ``auto``, ``float32`` or ``bfloat16`` (an explicit one always wins). ``validated``: the
    lowest precision the encoder was validated in (a delta's JSON ``dtype``): ``auto`` never goes below it,
    and picks bfloat16 only where the hardware computes it natively.
    """
    if requested not in CHOICES:
        raise ValueError(f"text dtype must be one of {', '.join(CHOICES)} (got {requested!r})")
    if requested != "auto":
        slow = requested == "bfloat16" and not capability.native_bf16
        return DtypeChoice(requested, "requested" + (" (no native bfloat16 here: slower than float32)" if slow else ""))
    if validated != "bfloat16":
        return DtypeChoice("float32", "auto: the encoder is validated in float32 only")
    if capability.native_bf16:
        which = "CUDA" if capability.cuda_bf16 else "+".join(sorted(capability.flags & BF16_FLAGS))
        return DtypeChoice("bfloat16", f"auto: native bfloat16 ({which})")
    return DtypeChoice("float32", "auto: no avx512_bf16/amx_bf16, bfloat16 would be emulated (slower)")


def main() -> None:
    cap = detect()
    print(f"cpu: {cap.describe()}, {os.cpu_count()} cores, load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"text encoder dtype (auto, bfloat16-validated encoder): {choose_dtype('auto', cap).dtype}")


if __name__ == "__main__":
    main()
