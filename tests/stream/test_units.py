"""Small parts of the runtime: events, channels, speaker slots, personas, micro-batching."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from stream import events as ev
from stream.batching import MicroBatcher
from stream.channel import Channel, ChannelClosed, FullPolicy
from stream.params import PersonaParams
from stream.session import PersonaTracker, SpeakerSlots

LABELS = ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")


def test_emotion_event_fields_and_stable_id() -> None:
    probs = [0.05, 0.05, 0.05, 0.05, 0.7, 0.05, 0.05]
    e = ev.emotion_event(session="s1", utterance_id="u1", speaker="Alice", t_start=0.0, t_end=1.5, text="hi",
                         labels=LABELS, probs=probs, modalities=("t",), index=0, latency_ms=12.3)
    assert e["schema_version"] == ev.SCHEMA_VERSION and e["type"] == "emotion"
    assert e["expression"] == "happiness" and e["label"] == "joy"  # EmotionML name + model label
    assert set(e["scores"]) == {"neutral", "surprise", "fear", "sadness", "happiness", "disgust", "anger"}
    assert e["confidence"] == pytest.approx(0.7)
    assert e["modalities"] == ["text"]
    # valence/arousal = expectation of the category coordinates under the scores
    v = sum(p * ev.VALENCE_AROUSAL[ev.expression_name(lb)][0] for lb, p in zip(LABELS, probs, strict=True))
    assert e["valence"] == pytest.approx(v, abs=1e-4) and e["valence"] > 0.4
    again = ev.emotion_event(session="s1", utterance_id="u1", speaker="Alice", t_start=0.0, t_end=1.5, text="hi",
                             labels=LABELS, probs=probs, modalities=("t",), index=0, latency_ms=99.0)
    assert again["event_id"] == e["event_id"]  # duplicates can be dropped by id
    assert ev.event_id("s1", "u2", "emotion") != e["event_id"]
    assert ev.event_id("s2", "u1", "emotion") != e["event_id"]
    assert ev.event_id("s1", "u1", "shift") != e["event_id"]
    assert "worker_id" not in e
    assert ev.emotion_event(session="s", utterance_id="u", speaker="A", t_start=0, t_end=1, text=None,
                            labels=LABELS, probs=probs, modalities=(), index=0, latency_ms=1,
                            worker_id="w1")["worker_id"] == "w1"


def test_channel_policies_and_close() -> None:
    async def go() -> None:
        ch: Channel[int] = Channel("c", 2, FullPolicy.DROP_OLDEST)
        for i in range(5):
            ch.put_nowait(i)
        assert [ch.get_nowait(), ch.get_nowait()] == [3, 4] and ch.dropped == 3
        ch2: Channel[int] = Channel("c2", 2, FullPolicy.DROP_NEWEST)
        assert [ch2.put_nowait(i) for i in range(3)] == [True, True, False] and ch2.dropped == 1
        ch3: Channel[int] = Channel("c3", 1, FullPolicy.BLOCK)
        await ch3.put(1)
        blocked = asyncio.create_task(ch3.put(2))
        await asyncio.sleep(0.01)
        assert not blocked.done()  # back-pressure
        assert await ch3.get() == 1
        await asyncio.wait_for(blocked, 1)
        ch3.close()
        assert [x async for x in ch3] == [2]  # drained, then the iteration ends
        with pytest.raises(ChannelClosed):
            await ch3.put(3)
    asyncio.run(go())


def test_speaker_slots_reuse_least_recent() -> None:
    s = SpeakerSlots(2)
    assert (s.slot("A"), s.slot("B"), s.slot("A")) == (0, 1, 0)
    assert s.slot("C") == 1  # B is least recently active: C takes its slot
    assert s.reused == 1 and "B" not in s.mapping
    assert s.slot("B") == 0  # A is now the least recent
    assert SpeakerSlots.restore(s.export()).mapping == s.mapping


def test_persona_fixed_default_and_smoothed_estimate() -> None:
    fixed = PersonaTracker(5, PersonaParams(), fixed={"Alice": [0.1, 0.2, 0.3, 0.4, 0.5]})
    assert fixed.update("Alice", {}).tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert fixed.update("Bob", {}).tolist() == pytest.approx([0.3] * 5)  # neutral default
    with pytest.raises(ValueError, match="persona of speaker 'X'"):
        PersonaTracker(5, PersonaParams(), fixed={"X": [1, 2]})
    est = PersonaTracker(5, PersonaParams(), estimator=lambda f: f["t"][:5], smoothing=0.5)
    a = est.update("A", {"t": np.ones(8, np.float32)})
    b = est.update("A", {"t": np.zeros(8, np.float32)})
    assert a.tolist() == pytest.approx([1.0] * 5) and b.tolist() == pytest.approx([0.5] * 5)
    assert est.update("B", {"t": np.zeros(8, np.float32)}).tolist() == pytest.approx([0.0] * 5)  # per speaker
    # an utterance without the estimator's modality keeps the last estimate
    assert est.update("A", {}).tolist() == pytest.approx([0.5] * 5)


def test_micro_batcher_batches_and_isolates_failures() -> None:
    from concurrent.futures import ThreadPoolExecutor

    sizes: list[int] = []

    def fn(xs: list[int]) -> list[int]:
        sizes.append(len(xs))
        if any(x < 0 for x in xs):
            raise ValueError("negative")
        return [x * 10 for x in xs]

    async def go() -> None:
        with ThreadPoolExecutor(1) as pool:
            b: MicroBatcher[int, int] = MicroBatcher("t", fn, pool, max_batch_size=8, maxsize=16)
            worker = asyncio.create_task(b.run())
            res = await asyncio.gather(*(b.submit(i) for i in range(5)), b.submit(-1), return_exceptions=True)
            b.close()
            await worker
        assert res[:5] == [0, 10, 20, 30, 40]
        assert isinstance(res[5], ValueError)
        assert max(sizes) > 1  # calls were batched
    asyncio.run(go())


def test_event_objects_have_exactly_the_documented_fields() -> None:
    """docs/events.md lists these; a change here must change the docs (and maybe SCHEMA_VERSION)."""
    common = {"schema_version", "type", "event_id", "session", "utterance_id"}
    e = ev.emotion_event(session="s", utterance_id="u", speaker="A", t_start=0, t_end=1, text="x", labels=LABELS,
                         probs=[1 / 7] * 7, modalities=("t",), index=0, latency_ms=1)
    assert set(e) == common | {"speaker", "t_start", "t_end", "index", "text", "emitted_at", "expression",
                               "label", "confidence", "scores", "valence", "arousal", "shift_probability",
                               "modalities", "latency_ms"}
    s = ev.shift_event(session="s", utterance_id="u", speaker="A", t_start=0, t_end=1, from_expression="neutral",
                       to_expression="anger", previous_utterance_id="u0", probability=0.5, latency_ms=1)
    assert set(s) == common | {"speaker", "t_start", "t_end", "emitted_at", "from", "to", "previous_utterance_id",
                               "probability", "profile", "latency_ms"}
    sp = ev.speaker_state(session="s", speaker="A", emotion=e, trend="steady", utterances=1)
    assert set(sp) == common | {"speaker", "updated_at", "expression", "confidence", "valence", "arousal", "trend",
                                "utterances", "process"}
    se = ev.session_event(session="s", run_id="0" * 16, state="started", started_at="t", process="p")
    assert set(se) == {"schema_version", "type", "event_id", "session", "run_id", "state", "started_at", "emitted_at",
                       "process", "utterances"}
    er = ev.error_event(session="s", stage="x", category="input", message="m")
    assert set(er) == {"schema_version", "type", "event_id", "session", "stage", "category", "message",
                       "emitted_at"}


def test_speaker_trend_compares_the_latest_valence_with_the_ones_before() -> None:
    from stream.session import SpeakerMemory

    m = SpeakerMemory("happiness", "u1")
    assert m.trend() == "steady"
    for v, want in ((0.6, "steady"), (-0.6, "falling"), (-0.6, "falling"), (0.3, "rising"), (-0.3, "steady")):
        m.valences.append(v)
        assert m.trend() == want, (list(m.valences), want)


def test_supervisor_reports_failures_boundedly_and_expected_ones_as_warnings(caplog) -> None:
    """The runtime's and each cluster worker's tasks run under one Supervisor: a failure is logged once
    (expected types as a warning), fatal ones call on_fatal, the failure list stays bounded, and
    ``cancel_now`` / ``cancel_all`` leave nothing running."""
    import logging

    from stream.tasks import MAX_FAILURES_KEPT, OnError, Supervisor

    class BrokerGone(Exception):
        pass

    async def fail(exc: Exception) -> None:
        raise exc

    async def go() -> tuple[Supervisor, list[str], list[str]]:
        fatal: list[str] = []
        sup = Supervisor(on_fatal=lambda name, exc: fatal.append(name), expected=(BrokerGone,))
        tasks = [sup.spawn(f"t{i}", fail(ValueError(f"bad {i}"))) for i in range(MAX_FAILURES_KEPT + 5)]
        tasks.append(sup.spawn("broker", fail(BrokerGone("lost"))))
        tasks.append(sup.spawn("critical", fail(BrokerGone("lost")), OnError.CANCEL))
        await asyncio.gather(*tasks)
        sleepers = [sup.spawn(f"sleep{i}", asyncio.sleep(60)) for i in range(2)]
        await asyncio.sleep(0)
        assert sup.cancel_now() == ["sleep0", "sleep1"]
        await asyncio.gather(*sleepers, return_exceptions=True)
        assert all(t.cancelled() for t in sleepers)
        sup.spawn("sleep2", asyncio.sleep(60))
        return sup, fatal, await sup.cancel_all(1.0)

    with caplog.at_level(logging.WARNING, logger="stream.tasks"):
        sup, fatal, dangling = asyncio.run(go())
    assert fatal == ["critical"] and dangling == [] and sup.names == []
    assert len(sup.failures) == MAX_FAILURES_KEPT and sup.failures[-1] == ("critical", "BrokerGone: lost")
    levels = {r.getMessage().split(":")[0]: r.levelno for r in caplog.records}
    assert levels["task broker"] == logging.WARNING and levels["task t0 failed"] == logging.ERROR
