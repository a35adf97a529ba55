"""Checks shared by the cluster tests: exactly one content per utterance, equality with a single-process replay."""

from __future__ import annotations

import asyncio
from typing import Any

from stream.cluster.backend import ConversationBackend
from stream.mqtt.inbound import InboundUtterance
from tests.contract import check_events
from tests.support.cluster import EventWatch
from tests.support.toy_backend import ToyBackend


async def replay(backend: ConversationBackend, script: dict[str, list[dict[str, Any]]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Each conversation run start to end in this process: (session, utterance id) -> emotion event."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    runner = asyncio.get_running_loop().create_task(backend.run())
    try:
        for session, utts in script.items():
            conv = await backend.open(session, None)
            for number, u in enumerate(utts, 1):
                utt = InboundUtterance(session_id=session, speaker=u["speaker"], text=u["text"],
                                       utterance_id=u["utterance_id"], t_start=u["t_start"], t_end=u["t_end"])
                frames = await conv.process(utt, number)
                out[(session, u["utterance_id"])] = next(f.payload for f in frames if f.kind == "emotion")
            backend.close(session)
    finally:
        runner.cancel()
    return out


def check_exactly_once(watch: EventWatch, script: dict[str, list[dict[str, Any]]],
                       reference_backend: ConversationBackend | None = None, *, atol: float = 1e-9) -> dict[str, Any]:
    """Every utterance has events of exactly one content (duplicates are identical, ids included), and its
    prediction equals one uninterrupted process's (``reference_backend``, the toy backend by default)."""
    run = watch.run
    check_events(run.events)  # every message a worker published, against docs/asyncapi.yaml
    by_id: dict[str, dict[str, Any]] = {}
    for ev in run.events:
        first = by_id.setdefault(ev["event_id"], ev)
        assert ev == first, f"two different events with id {ev['event_id']}: {ev} vs {first}"
    by_utt = run.by_utterance()
    expected = {(s, u["utterance_id"]) for s, utts in script.items() for u in utts}
    assert set(by_utt) == expected, f"missing {sorted(expected - set(by_utt))[:5]}, extra {sorted(set(by_utt) - expected)[:5]}"
    multiple = [k for k, v in by_utt.items() if len(v) != 1]
    assert not multiple, f"utterances with more than one event id: {multiple[:5]}"
    reference = asyncio.run(replay(reference_backend or ToyBackend("replay"), script))
    bad = [k for k, (ev,) in by_utt.items()
           if ev["label"] != reference[k]["label"]
           or any(abs(ev["scores"][c] - reference[k]["scores"][c]) > atol for c in ev["scores"])]
    assert not bad, f"{len(bad)} predictions differ from a single-process replay, e.g. {bad[:3]}"
    assert not watch.errors, watch.errors[:3]
    load = run.load()
    assert "?" not in load, "events without worker_id"
    return {"events_raw": len(run.events), "unique": len(by_id), "load": dict(load)}
