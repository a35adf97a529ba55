"""prepare-meld on a tiny generated MELD-style CSV set, with a real (fast) registry text extractor."""

from __future__ import annotations

import csv
import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from extractors import meld_text
from pcgnet.data import load_dataset, read_pickle
from pcgnet.persona import PersonaEstimator
from prepare import meld

HEADER = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID", "Season",
          "Episode", "StartTime", "EndTime"]
LINES = {
    "train": [
        ("I love this, it\u0092s great!", "Joey", "joy", 0), ("What?! No way\u0085", "Ross", "surprise", 0),
        ("I hate you.", "Joey", "anger", 0), ("Fine.", "Rachel", "neutral", 0),
        ("So sad, so so sad.", "Monica", "sadness", 2), ("\u0093Okay\u0094 \u0097 sure.", "Chandler", "neutral", 2),
        ("Ugh, gross!", "Monica", "disgust", 2),
    ],
    "dev": [("Hi there.", "Phoebe", "neutral", 0), ("I\u0092m scared.", "Ross", "fear", 0),
            ("Don't be.", "Phoebe", "neutral", 0)],
    "test": [("Wow!", "Rachel", "surprise", 3), ("Great news!", "Ross", "joy", 3), ("Yes.", "Rachel", "neutral", 3)],
}


def write_csvs(d: Path, lines: dict = LINES) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for split, rows in lines.items():
        with (d / f"{split}_sent_emo.csv").open("w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(HEADER)
            for i, (text, spk, emo, dia) in enumerate(rows):
                w.writerow([i + 1, text, spk, emo, "neutral", dia, i, 1, 1, f"00:00:{i:02d},100", f"00:00:{i + 1:02d},28"])
    return d


def write_persona(path: Path, lines: dict = LINES, drop: int | None = None) -> Path:
    rng = np.random.default_rng(0)
    lengths: dict[int, int] = {}
    for split, rows in lines.items():
        for *_, dia in rows:
            vid = dia + meld.SPLIT_OFFSET[split]
            lengths[vid] = lengths.get(vid, 0) + 1
    persona = {v: rng.uniform(0, 0.6, (n, 5)).astype(np.float32) for v, n in lengths.items()}
    if drop is not None:
        persona[drop] = persona[drop][:-1]
    with path.open("wb") as f:
        pickle.dump(persona, f, protocol=4)
    return path


@pytest.fixture
def fixture(tmp_path: Path) -> tuple[Path, Path]:
    return write_csvs(tmp_path / "csv"), write_persona(tmp_path / "persona.pkl")


class CountingFactory:
    """The real registry factory, counting how many texts reach the extractor."""

    def __init__(self) -> None:
        self.encoded = 0

    def __call__(self, name: str) -> meld.TextEncoderSpec:
        spec = meld.make_text_encoder(name)

        def counted(media):
            self.encoded += len(media)
            return spec.encode(media)
        return meld.TextEncoderSpec(counted, spec.dim, spec.context_utterances)


def test_clean_text_and_times() -> None:
    assert meld.clean_text("it\u0092s \u0091a\u0092 \u0093b\u0094\u0085 c\u0097d e\u0096f\u00a0g") == \
        "it's 'a' \"b\"... c -- d e-f g"
    assert meld.parse_time("00:16:16,059") == pytest.approx(976.059)
    assert meld.parse_time("00:06:47,28") == pytest.approx(407.28)
    with pytest.raises(ValueError, match="bad time"):
        meld.parse_time("16:16")


def test_prepare_writes_standard_layout(fixture, tmp_path: Path) -> None:
    csv_dir, persona = fixture
    out = tmp_path / "out"
    factory = CountingFactory()
    r = meld.prepare_meld(csv_dir, persona, out, "vader", progress=False, encoder_factory=factory)
    assert r.dim == 4 and r.dialogues == {"train": 2, "dev": 1, "test": 1}
    assert factory.encoded == 13  # all texts are distinct

    feat = read_pickle(out / meld.FEATURE_FILE)
    assert len(feat) == 10
    vids, spk, labels, text, audio, visual, sents, train_vid, test_vid, valid_vid = feat
    assert audio is None and visual is None  # absent, not faked
    assert sorted(train_vid) == [0, 2, 1039] and test_vid == [1156] and valid_vid == [1039]
    assert [int(np.argmax(s)) for s in spk[0]] == [0, 1, 0, 2]  # first-appearance slots
    assert all(len(s) == 9 for s in spk[0])
    assert labels[2] == [3, 0, 5] and labels[1039] == [0, 2, 0]
    assert sents[0][0] == "I love this, it's great!" and sents[2][1] == '"Okay" -- sure.'
    cosmic = read_pickle(out / meld.TEXT_FILE)
    assert len(cosmic) == 11 and cosmic[8] == [0, 2] and cosmic[9] == [1156] and cosmic[10] == [1039]
    assert np.allclose(np.asarray(cosmic[3][0]), np.asarray(text[0]))
    side = json.loads((out / meld.META_FILE).read_text())
    assert side["extractors"]["t"] == {"name": "vader", "dim": 4, "cache": "vader"} and side["persona"]["source"] == "given"
    assert side["split_ids"] == {"train": [0, 2], "dev": [1039], "test": [1156]}

    ds = load_dataset("MELD", out / meld.FEATURE_FILE, valid_rate=0.0)
    assert ds.dims == {"t": 4} and ds.extractors["t"]["name"] == "vader"
    d0 = next(d for d in ds.train if d.id == 0)
    assert d0.speakers.tolist() == [0, 1, 0, 2] and d0.labels.tolist() == [4, 1, 6, 0]
    # The joyful utterance has a positive VADER compound score, the angry one a negative one.
    assert d0.features["t"][0, 3] > 0.3 and d0.features["t"][2, 3] < -0.3

    # Second run: every vector comes from the cache, the files are identical.
    before = (out / meld.TEXT_FILE).read_bytes()
    meld.prepare_meld(csv_dir, persona, out, "vader", progress=False, encoder_factory=factory)
    assert factory.encoded == 13
    assert (out / meld.TEXT_FILE).read_bytes() == before


def test_concatenating_extractor_is_prepared_part_by_part(fixture, tmp_path: Path) -> None:
    """A concatenation is encoded per part, each from its own cache, in the order the live extractor
    concatenates: a layout of one part fills the cache the concatenation's layout then reads."""
    from extractors.base import UtteranceMedia
    from extractors.registry import create

    csv_dir, persona = fixture
    cache = tmp_path / "cache"
    factory = CountingFactory()
    meld.prepare_meld(csv_dir, persona, tmp_path / "vader", "vader", cache, progress=False, encoder_factory=factory)
    assert factory.encoded == 13
    meld.prepare_meld(csv_dir, persona, tmp_path / "combo", "minilm-l6+lex", cache, progress=False,
                      encoder_factory=factory)
    assert factory.encoded == 13 + 2 * 13  # minilm-l6 and nrc encoded, vader read from its cache
    side = json.loads((tmp_path / "combo" / meld.META_FILE).read_text())
    assert side["extractors"]["t"] == {"name": "minilm-l6+lex", "dim": 398, "cache": "minilm-l6+vader+nrc"}
    ds = load_dataset("MELD", tmp_path / "combo", valid_rate=0.0)
    d0 = next(d for d in ds.train if d.id == 0)
    live = create("minilm-l6+lex").batch([UtteranceMedia(text=u.text) for u in meld.read_meld(csv_dir)[0].utterances])
    assert np.abs(np.stack([f.vector for f in live]) - d0.features["t"]).max() < 1e-4


def test_cross_fitted_train_vectors_replace_train_only(tmp_path: Path) -> None:
    words = ["great", "awful", "fine", "sad", "wow", "ugh", "nice", "bad", "ok", "happy", "angry", "meh"]
    lines = {**LINES, "train": [(f"{w} {i}!", "Joey" if i % 2 else "Ross", "neutral", 0 if i < 6 else 2)
                                for i, w in enumerate(words)]}
    csv_dir, persona = write_csvs(tmp_path / "csv", lines), write_persona(tmp_path / "p.pkl", lines)
    dialogues = meld.read_meld(csv_dir)
    rng = np.random.default_rng(0)
    y = {v: rng.normal(size=(len(d.utterances), 4)).astype(np.float32) for v, d in dialogues.items()}
    rows = [(v, u) for v in (0, 2) for u in range(6)]
    # Two fold encoders whose spaces are affine images of the extractor's (x = y A + c on the rows they trained
    # on); each gives the dialogue it never saw vectors q, which must land in the layout as (q - c) A^-1.
    folds, expected = [], {}
    for k, held_vid in enumerate((0, 2)):
        a, c = rng.normal(size=(4, 4)) + 3 * np.eye(4), rng.normal(size=4)
        held = np.array([v == held_vid for v, _ in rows])
        x = np.stack([y[v][u] for v, u in rows]) @ a + c
        q = rng.normal(size=(6, 4))
        x[held] = q
        expected[held_vid] = (q - c) @ np.linalg.inv(a)
        f = tmp_path / f"fold{k}.npz"
        np.savez(f, dialogue=np.array([v for v, _ in rows]), utterance=np.array([u for _, u in rows]), held=held,
                 gold=x.astype(np.float32))
        folds.append(f)
    text = {v: a.copy() for v, a in y.items()}
    record = meld.replace_train_vectors(dialogues, text, folds, "gold")
    for v in (0, 2):
        np.testing.assert_allclose(text[v], expected[v], atol=1e-4)
    assert all(np.array_equal(text[v], y[v]) for v in y if v >= 1039)  # dev and test untouched
    assert [(r["file"], r["held_out"]) for r in record] == [("fold0.npz", 6), ("fold1.npz", 6)]
    assert all(r["map_r2"] > 0.9999 for r in record)

    # Through prepare-meld: train replaced, dev (1039: in "train" here, valid_rate 0) and test kept, recorded.
    plain, out = tmp_path / "plain", tmp_path / "oof"
    meld.prepare_meld(csv_dir, persona, plain, "vader", progress=False)
    meld.prepare_meld(csv_dir, persona, out, "vader", progress=False, train_vectors=folds)
    old, new = (load_dataset("MELD", d / meld.FEATURE_FILE, valid_rate=0.0) for d in (plain, out))
    assert all(not np.array_equal(a.features["t"], b.features["t"])
               for a, b in zip(new.train, old.train, strict=True) if a.id < 1039)
    kept = [(a, b) for a, b in zip(new.train + new.test, old.train + old.test, strict=True) if a.id >= 1039]
    assert len(kept) == 2 and all(np.array_equal(a.features["t"], b.features["t"]) for a, b in kept)
    assert [r["file"] for r in json.loads((out / meld.META_FILE).read_text())["train_vectors"]] == \
        ["fold0.npz", "fold1.npz"]
    # One clear error each: a fold missing, an utterance held out twice, no ASR-style vectors for an ASR layout.
    with pytest.raises(meld.MeldError, match="6 train utterances are in no held-out fold"):
        meld.prepare_meld(csv_dir, persona, out, "vader", progress=False, train_vectors=folds[:1])
    with pytest.raises(meld.MeldError, match="dialogue 0 utterance 0 is held out twice"):
        meld.prepare_meld(csv_dir, persona, out, "vader", progress=False, train_vectors=[folds[0], *folds])
    with pytest.raises(meld.MeldError, match="not a train-vector file with 'asr' vectors"):
        meld.prepare_meld(csv_dir, persona, out, "vader", progress=False, train_vectors=folds, text_style="asr")
    bad = tmp_path / "bad.npz"
    np.savez(bad, dialogue=np.array([1039]), utterance=np.array([0]), held=np.array([True]),
             gold=np.zeros((1, 4), dtype=np.float32))
    with pytest.raises(meld.MeldError, match="dialogue 1039 utterance 0 is not a MELD train"):
        meld.prepare_meld(csv_dir, persona, out, "vader", progress=False, train_vectors=[bad])


def test_estimated_persona(fixture, tmp_path: Path) -> None:
    csv_dir, persona = fixture
    out = tmp_path / "est"
    meld.prepare_meld(csv_dir, persona, out, "vader", progress=False, persona_source="estimated", persona_alpha=0.5)
    side = json.loads((out / meld.META_FILE).read_text())
    assert side["persona"]["source"] == "estimated"
    est = PersonaEstimator.from_json(json.loads((out / meld.ESTIMATOR_FILE).read_text()))
    assert est.extractor == "vader" and est.dim == 4 and est.alpha == 0.5
    ds = load_dataset("MELD", out, valid_rate=0.0)
    assert ds.persona_source == "estimated"
    d0 = next(d for d in ds.train if d.id == 0)
    assert np.allclose(d0.persona, est.estimate_dialogue(d0.features["t"], d0.speakers.tolist()), atol=1e-6)
    given = read_pickle(persona)[0]
    assert not np.allclose(d0.persona, given)


@pytest.mark.parametrize("problem, match", [
    ("emotion", r"train_sent_emo.csv:3: unknown emotion 'happy'"),
    ("column", r"missing column\(s\) \['Speaker'\]"),
    ("persona", r"dialogue 2 persona shape \(2, 5\), expected \(3, 5\)"),
    ("missing", r"dev_sent_emo.csv: file not found"),
])
def test_clear_errors(tmp_path: Path, problem: str, match: str) -> None:
    lines = {k: list(v) for k, v in LINES.items()}
    if problem == "emotion":
        lines["train"][1] = ("What?!", "Ross", "happy", 0)
    csv_dir = write_csvs(tmp_path / "csv", lines)
    persona = write_persona(tmp_path / "p.pkl", drop=2 if problem == "persona" else None)
    if problem == "column":
        p = csv_dir / "train_sent_emo.csv"
        p.write_text(p.read_text(encoding="utf-8").replace("Speaker", "Who", 1), encoding="utf-8")
    if problem == "missing":
        (csv_dir / "dev_sent_emo.csv").unlink()
    with pytest.raises(meld.MeldError, match=match):
        meld.prepare_meld(csv_dir, persona, tmp_path / "out", "vader", progress=False)


def test_cli_reports_one_line_error(tmp_path: Path, capsys) -> None:
    from prepare.cli import main

    rc = main(["prepare-meld", "--csv-dir", str(tmp_path / "nope"), "--persona", str(tmp_path / "p.pkl"),
               "--out", str(tmp_path / "out"), "--text-extractor", "vader", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "train_sent_emo.csv: file not found" in err[0]


@pytest.mark.parametrize("name", [meld_text.NAME, meld_text.CONTEXT_NAME, f"{meld_text.NAME}+{meld_text.CONTEXT_NAME}"])
def test_live_replay_matches_batch_evaluation(name: str, fixture, tmp_path: Path, capsys) -> None:
    """MELD-style dialogues through the live runtime give exactly what batch evaluation computes, with the
    shipped text encoder (bfloat16) and the context-reading one: the session must feed each utterance the
    same earlier utterances that prepare-meld gave it, and shift events must follow the stored threshold."""
    import asyncio

    import torch
    from sklearn.metrics import f1_score

    from extractors.base import UtteranceMedia
    from extractors.registry import create
    from pcgnet.checkpoint import save_checkpoint
    from pcgnet.config import MELD_LABELS, PCGNetConfig
    from pcgnet.data import collate
    from pcgnet.model import PCGNet
    from pcgnet.shift import ShiftRule, decide_dialogues
    from prepare.cli import main
    from stream.analyzer import load_analyzer
    from stream.frames import Utterance

    csv_dir, persona = fixture
    out = tmp_path / "data"
    meld.prepare_meld(csv_dir, persona, out, name, progress=False, persona_source="estimated")
    side = json.loads((out / meld.META_FILE).read_text())
    ds = load_dataset("MELD", out, valid_rate=0.0)
    csv_dialogues = meld.read_meld(csv_dir)
    dialogues = ds.train + ds.test

    # The encoder input matters: a context reader gives other vectors for the same utterances alone.
    ex = create(name)
    d0 = next(d for d in ds.train if d.id == 0)
    alone = np.stack([f.vector for f in ex.batch([UtteranceMedia(text=u.text) for u in csv_dialogues[0].utterances])])
    assert np.abs(alone[0] - d0.features["t"][0]).max() < 1e-4  # the first one has no context
    if ex.context_utterances:
        assert np.abs(alone[1:] - d0.features["t"][1:]).max(axis=1).min() > 1e-3
    else:
        assert np.abs(alone - d0.features["t"]).max() < 1e-4

    cfg = PCGNetConfig(labels=MELD_LABELS, modalities=("t",), dims={"t": ex.dim}, n_speakers=9, hidden=16,
                       causal=True, window_utterances=8)
    torch.manual_seed(0)
    model = PCGNet(cfg).eval()
    with torch.no_grad():
        o = model(collate(dialogues, ("t",)))
    batch_probs = o.emotion_logp.exp().numpy()
    prev_i, cur_i, trans = o.shift_prev.numpy(), o.shift_cur.numpy(), o.shift_logp.exp().numpy()
    p_shift = decide_dialogues(batch_probs, prev_i, cur_i, trans, 0.5, 0.5, 0.5).probability
    # Some pairs on each side, with the widest gap in the middle half: the live and batch p_shift are two
    # different float computations (1e-7 apart), so no pair may sit on the threshold (a median of an odd count
    # would be one of them).
    srt = np.sort(p_shift)
    lo = max(1, len(srt) // 4)
    k = lo + int(np.argmax(np.diff(srt[lo - 1:len(srt) - lo + 1])))
    assert srt[k] - srt[k - 1] > 1e-4
    rule = ShiftRule(weight=0.5, mix=0.5, thresholds={"balanced": float((srt[k - 1] + srt[k]) / 2)})
    threshold = rule.threshold()
    ck = save_checkpoint(tmp_path / "ck", model, extractors=side["extractors"], persona=side["persona"],
                         shift=rule.to_json())
    batch = decide_dialogues(batch_probs, prev_i, cur_i, trans, rule.weight, threshold, rule.mix)  # = evaluate
    flat = [(d.id, i) for d in dialogues for i in range(len(d))]
    batch_shifts = {flat[int(k)] for k, s in zip(cur_i, batch.shift, strict=True) if s}

    async def replay() -> list[tuple[int, int, dict]]:
        a = load_analyzer(ck)
        workers = [asyncio.create_task(c) for c in a.tasks().values()]
        events = []
        for d in dialogues:
            for i, u in enumerate(csv_dialogues[d.id].utterances):
                frames = await a.process(Utterance(session_id=f"meld{d.id}", utterance_id=f"u{i}", speaker=u.speaker,
                                                   t_start=u.start, t_end=u.end, text=u.text))
                events += [(d.id, i, f) for f in frames if f.kind in ("emotion", "shift")]
        a.close()
        await asyncio.gather(*workers)
        return events

    events = asyncio.run(replay())
    emotions = [f.payload for _, _, f in events if f.kind == "emotion"]
    live_probs = np.array([list(e["scores"].values()) for e in emotions])
    assert live_probs.shape == batch_probs.shape
    assert np.abs(live_probs - batch_probs).max() < 1e-4  # events round scores to 5 decimals
    assert live_probs.std(0).max() > 1e-3  # the model does tell utterances apart
    live_shifts = {(d, i) for d, i, f in events if f.kind == "shift"}
    assert live_shifts == batch_shifts and 0 < len(live_shifts) < len(p_shift)
    # the reported expressions are the rule's, and every shift's `to` is its own utterance's expression
    assert [e["label"] for e in emotions] == [MELD_LABELS[k] for k in batch.reported]
    expression = {(d, i): f.payload["expression"] for d, i, f in events if f.kind == "emotion"}
    assert all(f.payload["to"] == expression[d, i] for d, i, f in events if f.kind == "shift")

    # `pcgnet evaluate` on the checkpoint and layout scores what the live predictions score (sklearn here).
    for split, part in (("train", ds.train), ("test", ds.test)):
        ids = {d.id for d in part}
        gold = [u.label for d in part for u in csv_dialogues[d.id].utterances]
        pred = [MELD_LABELS.index(e["label"]) for (d, _, f), e in zip(
            [x for x in events if x[2].kind == "emotion"], emotions, strict=True) if d in ids]
        capsys.readouterr()
        assert main(["evaluate", "--ckpt", str(ck), "--dataset", "MELD", "--data_dir", str(out), "--split", split,
                     "--json"]) == 0
        got = json.loads(capsys.readouterr().out)
        b = got["binary_shift"]
        assert b["reported_weighted_f1"] == pytest.approx(f1_score(gold, pred, average="weighted"), abs=1e-12)
        assert b["threshold"] == threshold and b["rule"] == "joint-v1" and b["profile"] == "balanced"


def test_cache_namespace_follows_retrainable_weights(tmp_path: Path) -> None:
    assert meld.cache_namespace("vader") == "vader"
    desc = meld_text.DEFAULT_WEIGHTS.with_suffix(".json").read_bytes()
    assert meld.cache_namespace(meld_text.NAME) == f"{meld_text.NAME}@{hashlib.sha256(desc).hexdigest()[:16]}"
    # Same weights, another dtype (or context, max length): another fingerprint, so no stale cached vectors.
    meta = json.loads(desc)
    prints = []
    for dtype in ("float32", "bfloat16"):
        (tmp_path / "d.json").write_text(json.dumps({**meta, "dtype": dtype}))
        prints.append(meld_text.delta_fingerprint("d", tmp_path))
    assert None not in prints and prints[0] != prints[1]
    assert meld_text.delta_fingerprint("absent", tmp_path) is None
    assert meld.text_key("a", "x") != meld.text_key("b", "x")


class Interrupted(Exception):
    """Stands in for Ctrl-C / a crash in the middle of encoding."""


def test_an_interrupted_run_resumes_from_its_cache_chunks(fixture, tmp_path: Path) -> None:
    """prepare-meld killed half-way keeps every whole chunk it flushed; the rerun encodes only the rest and
    writes the same layout as an uninterrupted run (a kill mid-write leaves a temporary file, ignored)."""
    csv_dir, persona = fixture
    cache = tmp_path / "cache"
    encoded: list[int] = []

    def factory(stop_after: int | None):
        def make(name: str) -> meld.TextEncoderSpec:
            spec = meld.make_text_encoder(name)

            def encode(media):
                if stop_after is not None and sum(encoded) >= stop_after:
                    raise Interrupted
                encoded.append(len(media))
                return spec.encode(media)
            return meld.TextEncoderSpec(encode, spec.dim, spec.context_utterances, spec.dtype)
        return make

    media = [m for d in meld.read_meld(csv_dir).values() for m in meld.dialogue_media(d)]
    with pytest.raises(Interrupted):  # batches of 2, a chunk every 4 vectors, stopped after 6 encoded
        meld.extract_texts(media, "vader", factory(6), cache, batch_size=2, progress=False, flush_every=4)
    folder = cache / "vader"
    chunks = sorted(folder.glob("chunk-*.npz"))
    assert len(chunks) == 2 and len(meld.FeatureCache(cache, "vader")) == 6  # one flushed on the stop itself
    (folder / "chunk-000009-1.npz").write_bytes(b"PK\x03\x04 torn")  # a chunk cut short: skipped, re-encoded
    (folder / ".chunk-000010-1.npz.123.tmp.npz").write_bytes(b"half")  # a kill mid-write: never read

    encoded.clear()
    resumed = meld.extract_texts(media, "vader", factory(None), cache, batch_size=2, progress=False, flush_every=4)
    assert sum(encoded) == 13 - 6  # only what the interrupted run had not flushed
    assert [p.name.startswith("chunk-000000-merged") for p in folder.glob("chunk-*.npz")] == [True]  # compacted
    whole = meld.extract_texts(media, "vader", factory(None), None, progress=False)
    np.testing.assert_allclose(resumed.vectors, whole.vectors, rtol=0, atol=1e-6)  # same text, same VADER scores
    assert resumed.namespace == whole.namespace == "vader"

    # Through the command: the rerun after an interruption writes the layout an uninterrupted run writes.
    meld.prepare_meld(csv_dir, persona, tmp_path / "a", "vader", cache, progress=False)
    meld.prepare_meld(csv_dir, persona, tmp_path / "b", "vader", tmp_path / "fresh", progress=False)
    a, b = (load_dataset("MELD", tmp_path / d, valid_rate=0.0) for d in ("a", "b"))
    for x, y in zip(a.train + a.test, b.train + b.test, strict=True):
        np.testing.assert_allclose(x.features["t"], y.features["t"], rtol=0, atol=1e-6)


def test_cache_namespace_records_a_dtype_other_than_the_validated_one() -> None:
    """The bfloat16-validated mpnet delta run in float32 (an AVX2 CPU) is cached apart from its bfloat16
    vectors; its bfloat16 key is the one earlier versions wrote, so their caches stay valid."""
    plain = meld.cache_namespace(meld_text.NAME)
    assert meld.cache_namespace(meld_text.NAME, "bfloat16") == plain
    assert meld.cache_namespace(meld_text.NAME, "float32") == f"{plain}/float32"
    assert meld.cache_namespace("minilm-l6", "float32") == "minilm-l6"
    assert meld.cache_namespace("minilm-l6", "bfloat16") == "minilm-l6/bfloat16"
    folders = {meld.FeatureCache(Path("/nonexistent"), ns).folder for ns in (plain, f"{plain}/float32")}
    assert len(folders) == 2
