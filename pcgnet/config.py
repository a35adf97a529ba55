"""Model configuration: one dataclass that fully describes a PCGNet architecture.

It is what a checkpoint's JSON config stores (under ``"model"``), so every field must be JSON-serialisable.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

MODALITIES = ("t", "a", "v")  # fixed internal order: text, audio, visual (the paper's l, a, v)

IEMOCAP_LABELS = ("hap", "sad", "neu", "ang", "exc", "fru")
MELD_LABELS = ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")


@dataclass(frozen=True)
class DatasetSpec:
    """What the paper's feature pickles of one dataset look like."""

    name: str
    labels: tuple[str, ...]
    dims: dict[str, int]  # modality -> feature dim
    n_speakers: int  # qmask width (speaker slots)
    class_freq: tuple[float, ...]  # the paper's hard-coded frequencies; focal alpha = 1/freq


DATASETS: dict[str, DatasetSpec] = {
    "IEMOCAP": DatasetSpec(
        "IEMOCAP", IEMOCAP_LABELS, {"t": 1024, "a": 1582, "v": 342}, 2,
        (0.086747, 0.144406, 0.227883, 0.160585, 0.127711, 0.252668),
    ),
    "MELD": DatasetSpec(
        "MELD", MELD_LABELS, {"t": 1024, "a": 300, "v": 342}, 9,
        (0.46675, 0.12209, 0.02775, 0.07154, 0.17174, 0.02640, 0.11371),
    ),
}


@dataclass
class PCGNetConfig:
    """Architecture and regularisation of one PCGNet. Defaults are the paper's MELD command."""

    labels: tuple[str, ...] = MELD_LABELS
    modalities: tuple[str, ...] = MODALITIES  # subset of MODALITIES, always in that order
    dims: dict[str, int] = field(default_factory=lambda: dict(DATASETS["MELD"].dims))
    n_speakers: int = 9  # speaker slots (qmask width); live sessions map speakers to free slots
    persona_dim: int = 5
    hidden: int = 200  # h = hidden_l = hidden_a = hidden_v (the original requires them equal)
    persona_heads: int = 4  # per modality (the CLI accepts --persona_{l,a,v}_heads, which must agree)
    persona_layers: int = 1
    interactive_heads: int = 4
    interactive_layers: int = 1
    persona_transform: bool = True  # Linear(5, h) on the persona vector
    dropout_forward: float = 0.0  # on the raw input features
    dropout_gru: float = 0.2  # inter-layer dropout of the 2-layer GRUs (dropout_persona_lstm_modeling)
    dropout_persona: float = 0.2
    dropout_interactive: float = 0.2
    dropout_conv: float = 0.6  # hard-coded in the original interactive conv; kept, but configurable
    dropout_smax_erc: float = 0.5
    dropout_smax_shift: float = 0.5
    erc_windows: int = 1
    shift_windows: int = 1
    interactive_windows: int = 1
    use_persona: bool = True  # False = --wo_persona
    use_crosstask: bool = True  # False = --wo_crosstask
    use_shift_cl: bool = True  # False = --wo_shiftcl
    use_shift_task: bool = True  # False = --wo_shift: no shift loss and no contrastive loss (ERC only)
    use_graph: bool = True  # False = ablation "without the graph" (encoders + heads only)
    causal: bool = False  # forward-only GRUs: streaming-safe, exact incremental inference
    window_utterances: int = 16  # streaming: past utterances kept per conversation
    version: int = 1  # bumped when the parameter layout changes

    @property
    def n_classes(self) -> int:
        return len(self.labels)

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["labels"] = list(self.labels)
        d["modalities"] = list(self.modalities)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PCGNetConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown} (written by a newer version?)")
        d = dict(d)
        d["labels"] = tuple(d.get("labels", MELD_LABELS))
        d["modalities"] = tuple(d.get("modalities", MODALITIES))
        return cls(**d)

    def __post_init__(self) -> None:
        bad = [m for m in self.modalities if m not in MODALITIES]
        if bad or not self.modalities:
            raise ValueError(f"modalities must be a non-empty subset of {MODALITIES} (got {self.modalities})")
        self.modalities = tuple(m for m in MODALITIES if m in self.modalities)
        for m in self.modalities:
            if m not in self.dims:
                raise ValueError(f"no feature dim given for modality {m!r} (dims={self.dims})")
        for name, heads in (("persona_heads", self.persona_heads), ("interactive_heads", self.interactive_heads)):
            if self.hidden % heads:
                raise ValueError(f"hidden ({self.hidden}) must be divisible by {name} ({heads})")
