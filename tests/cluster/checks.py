"""Checks shared by the cluster tests: exactly-once events, equality with a single-process replay, load."""

from __future__ import annotations

import asyncio
from typing import Any

from stream.cluster.backend import ConversationBackend
from stream.mqtt.inbound import InboundUtterance
from tests.contract import check_events
from tests.support.cluster import ClusterRun


async def replay(backend: ConversationBackend, script: dict[str, list[dict[str, Any]]]) -> dict[tuple[str, str], dict]:
    """Each conversation run start to end in this process: (session, utterance id) -> emotion event."""
    out: dict[tuple[str, str], dict] = {}
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


def check_run(run: ClusterRun, script: dict[str, list[dict[str, Any]]], reference: dict[tuple[str, str], dict],
              killed: str, *, atol: float = 1e-9) -> dict[str, Any]:
    """Asserts the issue's acceptance criteria; returns figures for the test's message."""
    check_events(run.events)  # every message a worker published, against docs/asyncapi.yaml
    expected = {(s, u["utterance_id"]) for s, utts in script.items() for u in utts}
    by_utt = run.by_utterance()
    missing = sorted(expected - set(by_utt))
    assert not missing, f"{len(missing)} utterances have no emotion event, e.g. {missing[:5]}"
    multiple = {k: v for k, v in by_utt.items() if len(v) != 1}
    assert not multiple, f"utterances with more than one distinct event id: {list(multiple)[:5]}"
    assert set(by_utt) == expected, f"events for unknown utterances: {sorted(set(by_utt) - expected)[:5]}"

    # Same predictions as one uninterrupted process, for every conversation (hand-offs included).
    mismatched = []
    for key, (ev,) in by_utt.items():
        ref = reference[key]
        if ev["label"] != ref["label"] or any(abs(ev["scores"][c] - ref["scores"][c]) > atol for c in ref["scores"]):
            mismatched.append((key, ev.get("worker_id"), ev["scores"], ref["scores"]))
    workers_of = run.workers_of()
    handed_off = sorted(s for s, ws in workers_of.items() if len(ws) > 1)
    assert not mismatched, f"{len(mismatched)} predictions differ from a single-process replay: {mismatched[:2]}"
    assert handed_off, "no conversation changed owner: the kill did not exercise a hand-off"
    assert all(killed in workers_of[s] for s in handed_off), "a conversation moved although its owner lived"

    # Every event names its worker, and the load was spread.
    load = run.load()
    assert "?" not in load, "events without worker_id"
    total = sum(load.values())
    assert max(load.values()) <= total / 2, f"one worker took more than half the load: {dict(load)}"
    # The publisher saw the new owners announce themselves (acks from a higher epoch).
    assert run.feeder is not None
    assert run.feeder.stats.new_epochs >= len(handed_off), f"{run.feeder.stats} for {len(handed_off)} hand-offs"
    return {"handed_off": len(handed_off), "load": dict(load), "events_raw": len(run.events),
            "events_unique": total, "feeder": run.feeder.stats}
