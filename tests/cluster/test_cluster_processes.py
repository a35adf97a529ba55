"""Real broker, real worker processes, one SIGKILL mid-stream (the issue's acceptance test)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support.broker import Mosquitto
from tests.support.cluster import (
    ClusterRun,
    WorkerProcess,
    collect_run,
    make_script,
    wait_workers_online,
)
from tests.support.toy_backend import ToyBackend

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


def _run_and_kill_one(broker: Mosquitto, tmp_path: Path, ids: list[str], worker_args: tuple[str, ...],
                      script, reference_backend, *, online_s: float, interval_s: float, timeout_s: float,
                      label: str, toy: bool = False, **check_kw) -> None:
    """Start the workers, stream the script, SIGKILL the busiest worker halfway, check against a replay."""
    workers = {w: WorkerProcess.start(w, broker.port, tmp_path, *worker_args, toy=toy) for w in ids}
    try:
        asyncio.run(wait_workers_online(broker.settings, set(ids), timeout_s=online_s))
        total = sum(len(u) for u in script.values())
        run = asyncio.run(collect_run(broker.settings, script, interval_s=interval_s,
                                      on_event=_kill_busiest_at(workers, total // 2), timeout_s=timeout_s,
                                      resend_after_s=1.0))
        assert run.killed is not None
        reference = asyncio.run(replay(reference_backend(), script))
        figures = check_run(run, script, reference, run.killed, **check_kw)
        print(f"{label}: {figures}")
    finally:
        for w in workers.values():
            w.stop()
    logs = "\n".join(w.log_tail(600) for w in workers.values())
    assert "Traceback" not in logs, logs


@pytest.mark.parametrize("state_every", [1, 4])
def test_three_toy_workers_survive_a_sigkill(broker: Mosquitto, tmp_path: Path, state_every: int) -> None:
    """With state_every=4 the new owner also repeats up to 3 steps (same events, same ids)."""
    _run_and_kill_one(broker, tmp_path, ["w1", "w2", "w3"], ("--state-every", str(state_every)),
                      make_script(30, 12, seed=1), lambda: ToyBackend("replay"), toy=True,
                      online_s=30, interval_s=0.05, timeout_s=40, label="toy cluster")


@pytest.mark.slow
def test_three_pcgnet_workers_survive_a_sigkill(broker: Mosquitto, tmp_path: Path) -> None:
    """The same with the causal PCGNet (tiny deterministic checkpoint) and the real MiniLM extractor."""
    from stream.cluster.pcgnet_backend import PCGNetBackend
    from tests.support.checkpoints import make_tiny_checkpoint

    ck = make_tiny_checkpoint(tmp_path / "ck", seed=3, hidden=16, n_speakers=4, window_utterances=8)
    _run_and_kill_one(broker, tmp_path, ["p1", "p2", "p3"], ("--checkpoint", str(ck)), make_script(30, 10, seed=2),
                      lambda: PCGNetBackend.from_checkpoint(ck, worker_id="replay"),
                      online_s=90, interval_s=0.4, timeout_s=60, label="pcgnet cluster", atol=2e-5)
