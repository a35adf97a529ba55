"""Corrupt and tampered files given to ``live.py``: one clear line naming the file, never a traceback wall.

Each case runs the real entry point as a subprocess and checks what a user would see on stderr.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo"


def copy_demo(tmp: Path, name: str) -> Path:
    d = tmp / name
    shutil.copytree(DEMO, d)
    return d


def copy_ckpt(src: Path, tmp: Path, name: str) -> Path:
    d = tmp / name
    shutil.copytree(src, d)
    return d


def rewrite_sha(ckpt: Path) -> None:
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["weights_sha256"] = hashlib.sha256((ckpt / "model.safetensors").read_bytes()).hexdigest()
    (ckpt / "config.json").write_text(json.dumps(cfg))


async def run_many(cases: list[tuple[str, list[str]]], parallel: int = 3) -> dict[str, tuple[int, str]]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT))
    sem = asyncio.Semaphore(parallel)
    out: dict[str, tuple[int, str]] = {}

    async def one(name: str, argv: list[str]) -> None:
        async with sem:
            p = await asyncio.create_subprocess_exec(sys.executable, str(ROOT / "live.py"), *argv, cwd=ROOT, env=env,
                                                     stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            so, se = await asyncio.wait_for(p.communicate(), 120)
            out[name] = (p.returncode or 0, so.decode(errors="replace") + se.decode(errors="replace"))

    await asyncio.gather(*(one(n, a) for n, a in cases))
    return out


@pytest.mark.slow
def test_corrupt_inputs_give_one_clear_line(tiny_checkpoint: Path, tmp_path: Path, capsys, caplog) -> None:
    from tests.support.checkpoints import make_tiny_checkpoint

    # -- recorded sessions -------------------------------------------------------------------------
    bad_wav = copy_demo(tmp_path, "bad_wav")
    (bad_wav / "audio.wav").write_bytes(os.urandom(3000))
    half_wav = copy_demo(tmp_path, "half_wav")  # a header promising more data than there is
    data = (half_wav / "audio.wav").read_bytes()
    (half_wav / "audio.wav").write_bytes(data[:44] + b"\x01")
    bad_line = copy_demo(tmp_path, "bad_line")
    lines = (bad_line / "utterances.jsonl").read_text().splitlines()
    lines[3] = '{"utterance_id": "u0004", "speaker": 42, "t_start": "soon"}'
    (bad_line / "utterances.jsonl").write_text("\n".join(lines) + "\n")
    bad_video = copy_demo(tmp_path, "bad_video")
    (bad_video / "video.mp4").write_bytes(os.urandom(5000))
    meta = json.loads((bad_video / "meta.json").read_text())
    meta["video"] = {"file": "video.mp4", "fps": 15.0}
    (bad_video / "meta.json").write_text(json.dumps(meta))
    bad_meta = copy_demo(tmp_path, "bad_meta")
    (bad_meta / "meta.json").write_text('{"format": "pcgnet-session", "version": ')

    # -- checkpoints -------------------------------------------------------------------------------
    tampered = copy_ckpt(tiny_checkpoint, tmp_path, "tampered")
    w = bytearray((tampered / "model.safetensors").read_bytes())
    w[-5] ^= 0x55
    (tampered / "model.safetensors").write_bytes(bytes(w))
    wrong_shape = copy_ckpt(tiny_checkpoint, tmp_path, "wrong_shape")
    other = make_tiny_checkpoint(tmp_path / "other", hidden=24)
    shutil.copy(other / "model.safetensors", wrong_shape / "model.safetensors")
    rewrite_sha(wrong_shape)  # checksum consistent: only the shapes are wrong
    garbage_cfg = copy_ckpt(tiny_checkpoint, tmp_path, "garbage_cfg")
    (garbage_cfg / "config.json").write_text("\x00\x01 not json")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "model.pt").write_bytes(b"\x80\x04\x95cos\nsystem\n(S'touch /tmp/pwned'\ntR.")

    ck = ["--checkpoint", str(tiny_checkpoint)]
    # (name, argv, text the message must name, exit-status check, run as a subprocess of live.py?)
    cases: list[tuple[str, list[str], str | None, Callable[[int, str], bool], bool]] = [
        ("corrupt wav", ["--replay", str(bad_wav), *ck], "audio.wav", lambda rc, o: rc != 0, True),
        # a WAV cut short (as a killed recorder leaves it): replayed with the audio there is
        ("truncated wav", ["--replay", str(half_wav), *ck], None, lambda rc, o: rc == 0 and "u0011" in o, False),
        # a corrupt video: named in one warning, the session replays without the visual modality
        ("corrupt video", ["--replay", str(bad_video), *ck], "video.mp4",
         lambda rc, o: rc == 0 and "u0011" in o, False),
        ("bad jsonl line", ["--replay", str(bad_line), *ck], "utterances.jsonl", lambda rc, o: rc != 0, False),
        ("bad meta", ["--replay", str(bad_meta), *ck], "meta.json", lambda rc, o: rc != 0, False),
        ("tampered weights", ["--replay", str(DEMO), "--checkpoint", str(tampered)], "model.safetensors",
         lambda rc, o: rc != 0 and "sha256" in o, True),
        ("wrong shapes", ["--replay", str(DEMO), "--checkpoint", str(wrong_shape)], "model.safetensors",
         lambda rc, o: rc != 0, False),
        ("garbage config", ["--replay", str(DEMO), "--checkpoint", str(garbage_cfg)], "config.json",
         lambda rc, o: rc != 0, False),
        ("pickle instead of checkpoint", ["--replay", str(DEMO), "--checkpoint", str(pickled)], "pickled",
         lambda rc, o: rc != 0, True),
        ("missing folder", ["--replay", str(tmp_path / "nope"), *ck], "nope", lambda rc, o: rc != 0, False),
    ]
    argv = {n: [*a, "--speed", "0", "--no-tui"] for n, a, _, _, _ in cases}
    # The real entry point as a subprocess for three cases; the rest through the same main() in-process
    # (everything they check fails before the model loads, so this saves a Python + torch start each).
    results = asyncio.run(run_many([(n, argv[n]) for n, _, _, _, sub in cases if sub]))
    from stream.app import main as live_main

    caplog.set_level(logging.WARNING)
    for name, _, _, _, sub in cases:
        if not sub:
            capsys.readouterr()
            caplog.clear()
            rc = live_main(argv[name])
            cap = capsys.readouterr()
            # in-process, log records go to pytest's handler rather than to stderr
            results[name] = (rc, cap.out + cap.err + "".join(f"{r.levelname} {r.getMessage()}\n"
                                                              for r in caplog.records))
    report = []
    for name, _, needle, ok, _ in cases:
        rc, out = results[name]
        report.append(f"{name}: rc={rc} | {out.strip().splitlines()[-1] if out.strip() else ''}")
        assert "Traceback" not in out, f"{name}: traceback\n{out}"
        assert ok(rc, out), f"{name}: rc={rc}\n{out}"
        if needle is None:
            continue
        assert needle in out, f"{name}: the message does not name {needle!r}\n{out}"
        errors = [x for x in out.splitlines() if "error" in x.lower() or "warn" in x.lower()]
        assert 1 <= len(errors) <= 3, f"{name}: expected one clear error line\n{out}"
        report.append(f"    -> {[x for x in errors if needle in x][0][:200]}")
    assert not Path("/tmp/pwned").exists()
    print("\n" + "\n".join(report))


def test_truncated_last_line_is_dropped_and_named(runtime_factory, tmp_path: Path, caplog) -> None:
    from stream.capture.replay import ReplaySource
    from stream.sinks.jsonl import JsonlSink

    torn = copy_demo(tmp_path, "torn")
    text = (torn / "utterances.jsonl").read_text()
    (torn / "utterances.jsonl").write_text(text[: text.rstrip().rfind("\n") + 15])  # last line cut mid-object
    events = tmp_path / "ev.jsonl"

    async def main() -> int:
        rt = runtime_factory([JsonlSink(events)])
        rt.add_source(ReplaySource(torn, speed=0), finite=True)
        return await rt.run()

    assert asyncio.run(main()) == 0
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "utterances.jsonl" in logged and "11" in logged, logged  # names the file and the dropped line
    emo = [json.loads(x) for x in events.read_text().splitlines() if '"emotion"' in x]
    assert len(emo) == 10  # everything up to the last complete utterance


def test_data_pickle_cannot_run_code(tmp_path: Path) -> None:
    """The paper's data pickles are read with a restricted unpickler: a code-running pickle is refused."""
    import pickle

    from pcgnet.data import DataError, read_pickle

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "features.pkl"
    path.write_bytes(pickle.dumps({"a": Evil()}))
    with pytest.raises(DataError) as info:
        read_pickle(path)
    assert str(path) in str(info.value) and "refusing" in str(info.value)
    assert not marker.exists()
