"""Online speaker clustering of voice prints: who is speaking, one utterance at a time, with stable names.

An utterance's :class:`VoicePrint` (:mod:`extractors.speaker` makes them) has three parts, and the similarity
of an utterance to a speaker is their weighted mean:

* the GE2E d-vector (cosine to the speaker's mean d-vector);
* the timbre, the utterance's mean MFCCs 1-19, compared as a cosine after subtracting the session's mean
  timbre (shrunk towards zero while few utterances are in) and liftering (coefficient k scaled by k), so no
  corpus statistics are baked in: the session is its own reference;
* the median pitch (log2 F0), as a Gaussian of the difference (separates low from high voices only: the
  median moves with intonation as much as between two male voices).

The weights were chosen on espeak-ng voiced MELD train dialogues; the thresholds (0.3 to join, 0.5 to merge)
on real acted voices (Fish Fillets tuning levels, ``benchmarks/diarization.py``), where the espeak-tuned 0.7
split every real voice into several (:data:`SYNTHETIC_VOICES` keeps those for synthetic voices).
Evidence before a new speaker: a print under ``min_new_s`` never opens one, and ``crowd_slope`` lowers the bar
to join as speakers open (a prior on few speakers; 0 by default: measured no gain). ``min_speakers``
(``--speakers-exact N``) stops merges below N; every merge is recorded (:attr:`SpeakerClusterer.merges`).

The clustering is online: an utterance joins the most similar speaker when the similarity reaches
``threshold`` (or when ``max_speakers`` are already open), else it opens a new speaker. A short utterance's
print is noisy, so the bar to open a speaker falls by ``short_slope`` per second under ``short_s``. After every update
two speakers whose means have converged (similarity >= ``merge_threshold``) are merged: the older name
survives, so labels already handed out stay meaningful and later utterances of both get the older name.
Enrolled speakers (:meth:`SpeakerClusterer.enroll`) carry a person's name and are never merged into others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from extractors.base import ExtractorError

N_TIMBRE = 19  # MFCC 1..19 (c0 is loudness, not voice)
_LIFTER = np.arange(1, N_TIMBRE + 1, dtype=np.float64)


@dataclass(frozen=True)
class VoicePrint:
    """What the clustering compares: unit d-vector, mean MFCC 1-19, median log2 F0 (NaN when unvoiced)."""

    dvector: np.ndarray
    timbre: np.ndarray
    log_f0: float
    seconds: float

    def check(self) -> None:
        d, t = np.asarray(self.dvector), np.asarray(self.timbre)
        if d.ndim != 1 or t.shape != (N_TIMBRE,):
            raise ExtractorError(f"voice print: expected a 1-d d-vector and {N_TIMBRE} timbre values")
        if not (np.isfinite(d).all() and np.isfinite(t).all()) or not np.linalg.norm(d) > 0:
            raise ExtractorError("voice print: contains NaN/inf or the d-vector is all zeros")


@dataclass(frozen=True)
class ClusterParams:
    """Weights of the three similarities (tuned on voiced MELD train) and the decision bars (on real voices)."""

    threshold: float = 0.3  # tuned on real voices (Fish Fillets tuning levels); espeak-ng: SYNTHETIC_VOICES
    merge_threshold: float | None = 0.5  # None: never merge
    w_dvector: float = 1.0
    w_timbre: float = 1.0
    w_pitch: float = 0.5
    short_s: float = 1.5  # a shorter utterance's print is noisier: it opens a new speaker only below
    short_slope: float = 0.2  # threshold - short_slope * (short_s - seconds)
    pitch_octaves: float = 0.25  # the pitch similarity is exp(-(difference / this) ** 2)
    timbre_prior: float = 3.0  # the session mean timbre is sum / (n + this): shrunk while few utterances are in
    turn_threshold: float = 0.45  # inside one voiced stretch, a piece below this is another voice (measured
    # on Fish Fillets tuning levels: 7% false cuts, 3% missed changes; espeak-ng: 0% and 29%), lowered by
    turn_short_slope: float = 0.3  # this per second that the shorter side is under 1.2 s (an exclamation)
    dvector_center: float = 0.0  # how much of the session's mean d-vector is taken off every d-vector
    min_new_s: float = 1.0  # a shorter print never opens a speaker once one is open: too little evidence
    exact_threshold: float = 0.6  # while fewer than min_speakers (--speakers-exact) are open, the bar to join
    crowd_slope: float = 0.0  # the prior on few speakers: each open speaker beyond the first lowers the bar
    # to join one by this much (a new speaker needs more evidence the more there already are)

    def __post_init__(self) -> None:
        for name in ("threshold", "merge_threshold"):
            v = getattr(self, name)
            if v is not None and not -1.0 <= v <= 1.0:
                raise ValueError(f"{name}: expected a similarity in [-1, 1] (got {v})")
        if min(self.w_dvector, self.w_timbre, self.w_pitch) < 0 or self.w_dvector + self.w_timbre + self.w_pitch <= 0:
            raise ValueError("weights: expected >= 0 with a positive sum")


SYNTHETIC_VOICES = ClusterParams(threshold=0.7, merge_threshold=0.8)
"""The bars for voices of one synthesizer (espeak-ng): their prints are much closer to each other than real
people's, so the real-voice defaults (0.3 / 0.5, tuned on Fish Fillets' acted dialogue) merge two espeak-ng
male voices; these were tuned on espeak-ng voiced MELD train (benchmarks/diarization.py)."""


@dataclass
class Speaker:
    """One cluster: sums of its utterances' parts (means are sums / count) and its display name."""

    name: str
    dvector: np.ndarray = field(default_factory=lambda: np.zeros(()))  # 0-d: takes the shape of the first add
    timbre: np.ndarray = field(default_factory=lambda: np.zeros(N_TIMBRE))
    f0_sum: float = 0.0
    f0_count: int = 0
    count: int = 0
    enrolled: bool = False

    def add(self, p: VoicePrint) -> None:
        self.dvector = self.dvector + _unit(np.asarray(p.dvector, np.float64))
        self.timbre = self.timbre + np.asarray(p.timbre, np.float64)
        if np.isfinite(p.log_f0):
            self.f0_sum += p.log_f0
            self.f0_count += 1
        self.count += 1

    def absorb(self, other: Speaker) -> None:
        self.dvector = self.dvector + other.dvector
        self.timbre = self.timbre + other.timbre
        self.f0_sum += other.f0_sum
        self.f0_count += other.f0_count
        self.count += other.count

    @property
    def log_f0(self) -> float:
        return self.f0_sum / self.f0_count if self.f0_count else float("nan")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / max(float(np.linalg.norm(x)), 1e-12)


@dataclass
class SpeakerClusterer:
    """Online clustering of voice prints into named speakers ("Speaker 1", ... or enrolled names).

    Args:
        params: similarity weights and thresholds.
        max_speakers: once this many speakers are open, every utterance joins the most similar one
            (PCGNet has fixed speaker slots; ``live.py --speakers N`` passes the number present).
    """

    params: ClusterParams = field(default_factory=ClusterParams)
    max_speakers: int = 9
    min_speakers: int = 1
    speakers: list[Speaker] = field(default_factory=list)
    merges: list[tuple[str, str]] = field(default_factory=list)
    """(retired name, surviving name) of every late merge, in order: the correction record. Utterances already
    named with the retired name were that person (:meth:`take_merges` hands them to whoever re-labels)."""
    _timbre_sum: np.ndarray = field(default_factory=lambda: np.zeros(N_TIMBRE))
    _dvector_sum: np.ndarray = field(default_factory=lambda: np.zeros(()))
    _n_prints: int = 0
    _opened: int = 0  # "Speaker N" names handed out so far

    def __post_init__(self) -> None:
        if self.max_speakers < 1:
            raise ValueError(f"max_speakers: expected >= 1 (got {self.max_speakers})")
        if not 1 <= self.min_speakers <= self.max_speakers:
            raise ValueError(f"min_speakers: expected 1..max_speakers (got {self.min_speakers})")

    @property
    def labels(self) -> list[str]:
        return [s.name for s in self.speakers]

    def _session_timbre(self, t: np.ndarray) -> np.ndarray:
        """Timbre relative to the session's (shrunk) mean, liftered, unit length."""
        mean = self._timbre_sum / (self._n_prints + self.params.timbre_prior)
        return _unit((t - mean) * _LIFTER)

    def _session_dvector(self, d: np.ndarray) -> np.ndarray:
        """Unit d-vector less ``dvector_center`` times the session's (shrunk) mean one, unit length: what all
        voices of a recording share (channel, room, language) is not what tells them apart."""
        d = _unit(np.asarray(d, np.float64))
        if not self.params.dvector_center or not self._n_prints:
            return d
        return _unit(d - self.params.dvector_center * self._dvector_sum / (self._n_prints + self.params.timbre_prior))

    def _similarity(self, d: np.ndarray, t: np.ndarray, f0: float, s: Speaker) -> float:
        p = self.params
        total = p.w_dvector * float(self._session_dvector(s.dvector) @ d) + p.w_timbre * float(self._session_timbre(s.timbre / s.count) @ t)
        weight = p.w_dvector + p.w_timbre
        if p.w_pitch and np.isfinite(f0) and np.isfinite(s.log_f0):
            total += p.w_pitch * float(np.exp(-(((f0 - s.log_f0) / p.pitch_octaves) ** 2)))
            weight += p.w_pitch
        return total / weight

    def similarities(self, p: VoicePrint) -> np.ndarray:
        """Similarity of a print to each open speaker, in :attr:`speakers` order."""
        t = self._session_timbre(np.asarray(p.timbre, np.float64))
        d = self._session_dvector(p.dvector)
        return np.array([self._similarity(d, t, p.log_f0, s) for s in self.speakers])

    def same_voice(self, group: Sequence[VoicePrint], p: VoicePrint) -> bool:
        """Whether ``p`` sounds like the prints of ``group`` (consecutive pieces of one voiced stretch): the
        similarity that names speakers, at ``turn_threshold`` (extractors.turns)."""
        s = Speaker("group")
        for q in group:
            s.add(q)
        d, t = self._session_dvector(p.dvector), self._session_timbre(np.asarray(p.timbre, np.float64))
        short = max(0.0, 1.2 - min(p.seconds, sum(q.seconds for q in group)))
        return self._similarity(d, t, p.log_f0, s) >= self.params.turn_threshold - self.params.turn_short_slope * short

    def threshold_for(self, seconds: float) -> float:
        """The similarity at which an utterance this long joins a speaker rather than opening one (lower the
        shorter it is and the more speakers are open; never lower while fewer than ``min_speakers`` are)."""
        p = self.params
        if 1 < self.min_speakers and len(self.speakers) < self.min_speakers:  # --speakers-exact N: more will come
            return max(p.threshold, p.exact_threshold)
        crowd = p.crowd_slope * max(0, len(self.speakers) - max(1, self.min_speakers))
        return p.threshold - p.short_slope * max(0.0, p.short_s - seconds) - crowd

    def take_merges(self) -> list[tuple[str, str]]:
        """The merges since the last call ((retired, surviving) names), for a correction downstream."""
        out, self.merges = self.merges, []
        return out

    def enroll(self, name: str, p: VoicePrint) -> None:
        """A known person: utterances like ``p`` get ``name``. Enrolling a name again adds to its voice."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError("enroll: the name must be a non-empty string")
        p.check()
        self._observe(p)
        speaker = next((s for s in self.speakers if s.name == name), None)
        if speaker is None:
            if len(self.speakers) >= self.max_speakers:
                raise ValueError(f"enroll {name!r}: already {self.max_speakers} speakers (max_speakers)")
            speaker = Speaker(name, enrolled=True)
            self.speakers.append(speaker)
        speaker.add(p)

    def assign(self, p: VoicePrint) -> str:
        """The name of the speaker this print belongs to (a new one when none is similar enough)."""
        p.check()
        self._observe(p)
        if self.speakers:
            sims = self.similarities(p)
            best = int(sims.argmax())
            enough = p.seconds >= self.params.min_new_s or len(self.speakers) < self.min_speakers
            if sims[best] >= self.threshold_for(p.seconds) or len(self.speakers) >= self.max_speakers or not enough:
                self.speakers[best].add(p)
                return self._merge_into_older(best)
        s = Speaker(self._fresh_name())
        s.add(p)
        self.speakers.append(s)
        return s.name

    def _observe(self, p: VoicePrint) -> None:
        self._timbre_sum = self._timbre_sum + np.asarray(p.timbre, np.float64)
        self._dvector_sum = self._dvector_sum + _unit(np.asarray(p.dvector, np.float64))
        self._n_prints += 1

    def _fresh_name(self) -> str:
        while True:  # numbers are never reused (a merged-away name stays retired); enrolled names are skipped
            self._opened += 1
            if (name := f"Speaker {self._opened}") not in self.labels:
                return name

    def _merge_into_older(self, i: int) -> str:
        """Merge speaker ``i`` with a speaker it has converged with; returns the surviving name."""
        s = self.speakers[i]
        if len(self.speakers) > self.min_speakers and self.params.merge_threshold is not None:
            d, t = self._session_dvector(s.dvector), self._session_timbre(s.timbre / s.count)
            for j, other in enumerate(self.speakers):
                if j == i or (s.enrolled and other.enrolled):
                    continue
                if self._similarity(d, t, s.log_f0, other) >= self.params.merge_threshold:
                    # the survivor: an enrolled speaker, else the older one (lower index)
                    keep, drop = (j, i) if other.enrolled or (not s.enrolled and j < i) else (i, j)
                    self.speakers[keep].absorb(self.speakers[drop])
                    name = self.speakers[keep].name
                    self.merges.append((self.speakers[drop].name, name))
                    del self.speakers[drop]
                    return name
        return s.name
