"""Real broker, real worker processes, one SIGKILL mid-stream (the issue's acceptance test)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from stream.cluster.engine import ToyEngine
from stream.cluster.harness import (
    Broker,
    ClusterRun,
    WorkerProcess,
    collect_run,
    make_script,
    wait_workers_online,
)

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


def test_three_toy_workers_survive_a_sigkill(broker: Broker, tmp_path: Path) -> None:
    script = make_script(30, 12, seed=1)
    ids = ["w1", "w2", "w3"]
    workers = {w: WorkerProcess.start(w, broker.port, tmp_path, "--engine", "toy") for w in ids}
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
