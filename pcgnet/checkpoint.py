"""Checkpoints: a directory with ``model.safetensors`` (weights) and ``config.json`` (everything else).

Why not ``torch.save``: unpickling runs arbitrary code, so a checkpoint received from anyone would be an
executable. safetensors holds only named tensors, and the JSON holds the architecture, so loading a
checkpoint never executes anything from it. The JSON also records the sha256 of the weight file, so a
swapped or corrupted weight file is refused instead of silently producing wrong predictions.

Layout of ``config.json`` (docs/architecture.md, Seam 3)::

    {"format": "pcgnet-checkpoint", "format_version": 1,
     "model": PCGNetConfig.to_json(),            # includes the causal flag and the model version
     "extractors": {"t": {"name": "...", "dim": 1024}, ...},
     "persona": {"source": "given|estimated|none", ...},
     "weights_sha256": "...", "training": {...}, "metrics": {...},
     "shift": ShiftRule.to_json()}               # the shift rule and its profiles (pcgnet.shift)

Everything but the weights is parsed once into a frozen :class:`CheckpointMeta`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pcgnet.checkpoint_meta import (  # re-exported: the checkpoint API in one place
    CONFIG_FILE,
    PERSONA_SOURCES,
    CheckpointError,
    CheckpointMeta,
    ExtractorSpec,
)
from pcgnet.config import PCGNetConfig
from pcgnet.shift import ShiftRule

if TYPE_CHECKING:
    from pcgnet.model import PCGNet

log = logging.getLogger(__name__)

FORMAT = "pcgnet-checkpoint"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
__all__ = ["CONFIG_FILE", "PERSONA_SOURCES", "CheckpointError", "CheckpointMeta", "ExtractorSpec", "LoadedCheckpoint",
           "load_checkpoint", "read_meta", "resolve_device", "save_checkpoint", "write_shift_rule"]
@dataclass(frozen=True)
class LoadedCheckpoint:
    model: PCGNet  # in eval mode on the requested device
    info: CheckpointMeta  # config.json, parsed and typed

    @property
    def config(self) -> PCGNetConfig:
        return self.info.model

    @property
    def meta(self) -> dict[str, Any]:
        """The whole config.json as stored (provenance: training, metrics)."""
        return dict(self.info.raw)

    @property
    def extractors(self) -> dict[str, dict[str, Any]]:
        return dict(self.info.raw.get("extractors") or {})

    @property
    def persona(self) -> dict[str, Any]:
        return dict(self.info.raw.get("persona") or {})

    @property
    def shift_rule(self) -> ShiftRule:
        return self.info.shift_rule


def resolve_device(name: str | torch.device | None) -> torch.device:
    """'cpu' (default), 'cuda' or 'cuda:N'; asking for CUDA without a usable GPU is an error, not a fallback."""
    dev = torch.device(name or "cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif dev.type != "cpu":
        raise ValueError(f"--device {name}: unsupported device type {dev.type!r} (use cpu or cuda)")
    return dev


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _jsonable(x: Any, where: str) -> Any:
    try:
        return json.loads(json.dumps(x, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: metadata is not JSON-serialisable ({e})") from None


def _atomic_write(path: Path, write) -> None:
    """Write via a temporary file in the same folder, then rename: a crash never leaves half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_checkpoint(
    directory: str | os.PathLike,
    model: nn.Module,
    *,
    config: PCGNetConfig | None = None,
    extractors: Mapping[str, Any] | None = None,
    persona: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    **extra: Any,
) -> Path:
    """Write ``model.safetensors`` + ``config.json`` into ``directory`` (created if needed); returns it.

    ``config`` defaults to ``model.config``. ``extractors`` maps modality -> {"name", "dim"} (a bare name is
    accepted and the dim is taken from the config). Extra keyword arguments are stored as top-level JSON keys.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    config = config if config is not None else getattr(model, "config", None)
    if not isinstance(config, PCGNetConfig):
        raise CheckpointError(f"{directory}: save_checkpoint needs a PCGNetConfig (model.config or config=)")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"{directory}: cannot create checkpoint directory ({e.strerror})") from None

    ext: dict[str, dict[str, Any]] = {}
    for m, spec in (extractors or {}).items():
        if isinstance(spec, str):
            spec = {"name": spec}
        elif not isinstance(spec, Mapping):  # an Extractor object (name, dim attributes)
            spec = {"name": getattr(spec, "name", str(spec)), "dim": getattr(spec, "dim", None)}
        spec = dict(spec)
        if spec.get("dim") is None and m in config.dims:
            spec["dim"] = config.dims[m]
        ext[m] = spec
    for m, spec in ext.items():
        if m in config.modalities and spec.get("dim") != config.dims[m]:
            raise CheckpointError(
                f"{directory}: extractor for modality {m!r} has dim {spec.get('dim')} but the model expects "
                f"{config.dims[m]}")
    persona = dict(persona or {"source": "given" if config.use_persona else "none"})
    if persona.get("source") not in PERSONA_SOURCES:
        raise CheckpointError(f"{directory}: persona source must be one of {PERSONA_SOURCES}, got {persona.get('source')!r}")

    # Copies, so tied/shared parameters (which safetensors refuses to alias) are stored independently.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    weights = directory / WEIGHTS_FILE
    try:
        _atomic_write(weights, lambda tmp: save_file(tensors, tmp, metadata={"format": FORMAT}))
    except OSError as e:
        raise CheckpointError(f"{weights}: cannot write ({e.strerror})") from None

    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": config.to_json(),
        "extractors": ext,
        "persona": persona,
        "weights_sha256": _sha256(weights),
        "training": dict(training or {}),
        "metrics": dict(metrics or {}),
    }
    for k, v in extra.items():
        if k in meta:
            raise CheckpointError(f"{directory}: metadata key {k!r} is reserved")
        meta[k] = v
    meta = _jsonable(meta, str(directory / CONFIG_FILE))
    text = json.dumps(meta, indent=2, sort_keys=False) + "\n"

    def _write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    try:
        _atomic_write(directory / CONFIG_FILE, _write)
    except OSError as e:
        raise CheckpointError(f"{directory / CONFIG_FILE}: cannot write ({e.strerror})") from None
    log.info("saved checkpoint %s (%d tensors)", directory, len(tensors))
    return directory


def write_shift_rule(path: str | os.PathLike, rule: ShiftRule, metrics: Mapping[str, Any] | None = None) -> Path:
    """Store ``rule`` (and, per split, fresh metrics under it) in a checkpoint's config.json, atomically.

    The weights and their digest are untouched: the rule is a decision on top of the model's outputs, so
    a shipped model gets a new rule without retraining (``pcgnet evaluate --split valid --write-shift-rule``).
    """
    cfg_path, _ = _locate(path)
    meta = read_meta(cfg_path)
    meta["shift"] = rule.to_json()
    if metrics:
        meta["metrics"] = {**(meta.get("metrics") or {}), **metrics}
    text = json.dumps(_jsonable(meta, str(cfg_path)), indent=2) + "\n"

    def _write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    try:
        _atomic_write(cfg_path, _write)
    except OSError as e:
        raise CheckpointError(f"{cfg_path}: cannot write ({e.strerror})") from None
    return cfg_path


def _locate(path: str | os.PathLike) -> tuple[Path, Path]:
    p = Path(path)
    if p.is_dir():
        return p / CONFIG_FILE, p / WEIGHTS_FILE
    if p.name in (CONFIG_FILE, WEIGHTS_FILE) or p.suffix in (".json", ".safetensors"):
        return p.parent / CONFIG_FILE, p.parent / WEIGHTS_FILE
    if not p.exists():
        raise CheckpointError(f"{p}: checkpoint not found (expected a directory with {CONFIG_FILE} and {WEIGHTS_FILE})")
    if p.suffix in (".pkl", ".pt", ".pth", ".bin", ".ckpt"):
        raise CheckpointError(
            f"{p}: pickled checkpoints are refused (unpickling runs code); expected a directory with "
            f"{CONFIG_FILE} and {WEIGHTS_FILE}")
    raise CheckpointError(f"{p}: not a checkpoint (expected a directory with {CONFIG_FILE} and {WEIGHTS_FILE})")


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate ``config.json`` only (no weights): format, version and the model config."""
    cfg_path, _ = _locate(path)
    if not cfg_path.is_file():
        raise CheckpointError(f"{cfg_path}: missing (a checkpoint directory needs {CONFIG_FILE} and {WEIGHTS_FILE})")
    try:
        meta = json.loads(cfg_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise CheckpointError(f"{cfg_path}: not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_path}: invalid JSON at line {e.lineno} column {e.colno} ({e.msg})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{cfg_path}: expected a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{cfg_path}: unknown format {meta.get('format')!r} (expected {FORMAT!r})")
    ver = meta.get("format_version")
    if ver != FORMAT_VERSION:
        raise CheckpointError(
            f"{cfg_path}: unsupported format_version {ver!r} (this version reads {FORMAT_VERSION})")
    if not isinstance(meta.get("model"), dict):
        raise CheckpointError(f"{cfg_path}: missing the 'model' config object")
    try:
        PCGNetConfig.from_json(meta["model"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{cfg_path}: bad model config ({e})") from None
    if not isinstance(meta.get("weights_sha256"), str):
        raise CheckpointError(f"{cfg_path}: missing 'weights_sha256'")
    return meta


def build_model(config: PCGNetConfig) -> nn.Module:
    from pcgnet.model import PCGNet  # imported late: the checkpoint format does not depend on the model code

    return PCGNet(config)


def load_checkpoint(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    expect_extractors: Mapping[str, Any] | None = None,
) -> LoadedCheckpoint:
    """Load a checkpoint directory (or its config.json / model.safetensors path) without unpickling.

    ``expect_extractors``: modality -> extractor name, {"name", "dim"} or an Extractor; a mismatch with what
    the checkpoint was trained on is refused (features from another extractor are meaningless to the model).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    cfg_path, weights = _locate(path)
    info = CheckpointMeta.from_json(read_meta(cfg_path), str(cfg_path))
    config = info.model
    if expect_extractors:
        info.check_extractors(expect_extractors, str(cfg_path))
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing (the weights of {cfg_path.parent})")
    digest = _sha256(weights)
    if digest != info.weights_sha256:
        raise CheckpointError(
            f"{weights}: sha256 {digest[:12]}... does not match config.json ({info.weights_sha256[:12]}...); "
            "the weights were modified or belong to another checkpoint")
    try:
        dev = resolve_device(device)
    except ValueError as e:
        raise CheckpointError(f"{cfg_path.parent}: {e}") from None
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights}: not a readable safetensors file ({e})") from None
    try:
        model = build_model(config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{cfg_path}: cannot build the model from its config ({e})") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {missing[0]!r})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]!r})")
        raise CheckpointError(f"{weights}: does not match the model in config.json: {'; '.join(parts)}")
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise CheckpointError(
                f"{weights}: tensor {k!r} has shape {tuple(state[k].shape)}, the model expects {tuple(v.shape)}")
    model.load_state_dict(state, strict=True)
    model.to(dev).eval()
    return LoadedCheckpoint(model=model, info=info)
