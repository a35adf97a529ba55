"""Real broker, real worker processes, one SIGKILL mid-stream (the issue's acceptance test)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from stream.cluster.engine import ToyEngine
from stream.cluster.harness import (
    ClusterRun,
    WorkerProcess,
    collect_run,
    make_script,
    wait_workers_online,
)
from stream.testing import Mosquitto

from .checks import check_run, replay

pytestmark = pytest.mark.mqtt


def _kill_busiest_at(workers: dict[str, WorkerProcess], after_events: int):
    """on_event callback: SIGKILL the worker that served most events so far, once."""
    def on_event(run: ClusterRun) -> None:
        if run.killed is None and len(run.events) >= after_events:
            load = run.load()
            victim = max((w for w in load if w in workers), key=lambda w: load[w])
            workers[victim].kill()
            run.killed = victim
    return on_event


@pytest.mark.parametrize("state_every", [1, 4])
def test_three_toy_workers_survive_a_sigkill(broker: Mosquitto, tmp_path: Path, state_every: int) -> None:
    """With state_every=4 the new owner also repeats up to 3 steps (same events, same ids)."""
    script = make_script(30, 12, seed=1)
    ids = ["w1", "w2", "w3"]
    workers = {w: WorkerProcess.start(w, broker.port, tmp_path, "--engine", "toy", "--state-every", str(state_every))
               for w in ids}
    try:
        asyncio.run(wait_workers_online(broker.settings, set(ids), timeout_s=30))
        total = sum(len(u) for u in script.values())
        run = asyncio.run(collect_run(broker.settings, script, interval_s=0.05,
                                      on_event=_kill_busiest_at(workers, total // 2), timeout_s=40,
                                      resend_after_s=1.0))
        assert run.killed is not None
        reference = asyncio.run(replay(ToyEngine("replay"), script))
        figures = check_run(run, script, reference, run.killed)
        print(f"toy cluster: {figures}")
    finally:
        for w in workers.values():
            w.stop()
    logs = "\n".join(w.log_tail(600) for w in workers.values())
    assert "Traceback" not in logs, logs


@pytest.mark.slow
def test_three_pcgnet_workers_survive_a_sigkill(broker: Mosquitto, tmp_path: Path) -> None:
    """The same with the causal PCGNet (tiny deterministic checkpoint) and the real MiniLM extractor."""
    from stream.cluster.pcgnet_engine import PCGNetEngine
    from stream.testing import make_tiny_checkpoint

    ck = make_tiny_checkpoint(tmp_path / "ck", seed=3, hidden=16, n_speakers=4, window_utterances=8)
    script = make_script(30, 10, seed=2)
    ids = ["p1", "p2", "p3"]
    workers = {w: WorkerProcess.start(w, broker.port, tmp_path, "--checkpoint", str(ck)) for w in ids}
    try:
        asyncio.run(wait_workers_online(broker.settings, set(ids), timeout_s=90))
        total = sum(len(u) for u in script.values())
        run = asyncio.run(collect_run(broker.settings, script, interval_s=0.4,
                                      on_event=_kill_busiest_at(workers, total // 2), timeout_s=60,
                                      resend_after_s=1.0))
        assert run.killed is not None
        reference = asyncio.run(replay(PCGNetEngine.from_checkpoint(ck, worker_id="replay"), script))
        figures = check_run(run, script, reference, run.killed, atol=2e-5)
        print(f"pcgnet cluster: {figures}")
    finally:
        for w in workers.values():
            w.stop()
    logs = "\n".join(w.log_tail(600) for w in workers.values())
    assert "Traceback" not in logs, logs
