"""A checkpoint's ``config.json``, parsed once into a frozen, typed :class:`CheckpointMeta` (no torch, no IO).

Each rule about checkpoint metadata is one function next to its data: which extractors a model accepts
(:meth:`CheckpointMeta.check_extractors`), which modality feeds the persona estimator
(:meth:`CheckpointMeta.persona_modality`), and the shift rule (:mod:`pcgnet.shift`). ``pcgnet.checkpoint`` reads
and writes the files and re-exports everything here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pcgnet.config import PCGNetConfig
from pcgnet.shift import RULE_NAME, UNTUNED, ShiftRule, ShiftRuleError

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
PERSONA_SOURCES = ("given", "estimated", "none")


class CheckpointError(Exception):
    """A checkpoint cannot be written or read; the message names the file and the problem."""


@dataclass(frozen=True)
class ExtractorSpec:
    """The feature extractor a modality was trained on (registry name and feature size)."""

    name: str
    dim: int | None


@dataclass(frozen=True)
class CheckpointMeta:
    """``config.json`` parsed once, typed: what every consumer of a checkpoint needs besides the weights.

    Parameters:
        model: the architecture.
        extractors: modality -> the extractor its features came from.
        persona: the persona object as stored (``source``; with ``estimated`` the estimator's JSON, which
            ``pcgnet.persona.PersonaEstimator.from_json`` parses).
        weights_sha256: the digest of ``model.safetensors``.
        shift_rule: the one shift rule (pcgnet.shift) and its per-profile thresholds; ``UNTUNED`` when the
            checkpoint stores none, or stores a rule from before ``joint-v1`` (a warning names it).
        raw: the whole JSON (training provenance and metrics; read-only use).
    """

    model: PCGNetConfig
    extractors: Mapping[str, ExtractorSpec]
    persona: Mapping[str, Any]
    weights_sha256: str
    shift_rule: ShiftRule
    raw: Mapping[str, Any] = field(repr=False)

    @property
    def persona_source(self) -> str:
        return str(self.persona.get("source", "none"))

    @classmethod
    def from_json(cls, meta: Mapping[str, Any], where: str = CONFIG_FILE) -> CheckpointMeta:
        """Parse a validated config.json (:func:`read_meta`); CheckpointError naming ``where`` and the field."""
        config = PCGNetConfig.from_json(meta["model"])
        ex: dict[str, ExtractorSpec] = {}
        for m, spec in (meta.get("extractors") or {}).items():
            if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
                raise CheckpointError(f"{where}: extractor of modality {m!r} must be an object with a 'name'")
            dim = spec.get("dim")
            ex[str(m)] = ExtractorSpec(spec["name"], None if dim is None else int(dim))
        persona = dict(meta.get("persona") or {"source": "none"})
        if persona.get("source") not in PERSONA_SOURCES:
            raise CheckpointError(f"{where}: persona source must be one of {PERSONA_SOURCES}, "
                                  f"got {persona.get('source')!r}")
        return cls(config, ex, persona, str(meta["weights_sha256"]), _shift_rule(meta.get("shift"), where), meta)

    def persona_modality(self, extractor: str) -> str:
        """The modality whose features feed a persona estimator trained on ``extractor``'s features."""
        for m, spec in self.extractors.items():
            if spec.name == extractor:
                return m
        raise CheckpointError(f"the persona estimator reads {extractor!r} features but no modality of the "
                              f"checkpoint uses that extractor ({', '.join(self.extractors) or 'none'})")

    def check_extractors(self, expect: Mapping[str, Any], where: str) -> None:
        """Refuse extractors that differ from the ones the model was trained on (name, then size).

        ``expect``: modality -> a name, {"name", "dim"} or an object with ``name`` / ``dim``; modalities the
        model does not use are ignored (whatever produces them is irrelevant)."""
        for m, want in expect.items():
            if m not in self.model.modalities:
                continue
            if isinstance(want, str):
                want_name, want_dim = want, None
            elif isinstance(want, Mapping):
                want_name, want_dim = want.get("name"), want.get("dim")
            else:
                want_name, want_dim = getattr(want, "name", None), getattr(want, "dim", None)
            got = self.extractors.get(m)
            got_name = got.name if got else None
            if want_dim is not None and int(want_dim) != self.model.dims[m]:
                raise CheckpointError(
                    f"{where}: modality {m!r} extractor {want_name!r} gives {want_dim}-d features but the model "
                    f"was trained on {self.model.dims[m]}-d features from {got_name!r}")
            if want_name is not None and got_name != want_name:
                raise CheckpointError(
                    f"{where}: modality {m!r} was trained on features from extractor {got_name!r}, "
                    f"not {want_name!r}; use the same extractor or another checkpoint")


def _shift_rule(d: Any, where: str) -> ShiftRule:
    """The stored shift rule; UNTUNED (with a warning) for none or a pre-``joint-v1`` threshold."""
    if d is None:
        return UNTUNED
    if not isinstance(d, Mapping):
        raise CheckpointError(f"{where}: 'shift' must be an object")
    if "profiles" not in d:  # format of the first binary threshold (1 - diagonal >= t): another probability
        log.warning("%s: the stored shift threshold belongs to an older rule; using the untuned %s rule "
                    "(pcgnet evaluate --split valid --write-shift-rule chooses its parameters)", where, RULE_NAME)
        return UNTUNED
    try:
        return ShiftRule.from_json(d)
    except ShiftRuleError as e:
        raise CheckpointError(f"{where}: {e}") from None
