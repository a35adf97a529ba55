"""Pure parts of the cluster layer: the progress record, the worker's parameters, the state blob."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stream.cluster.progress import RECENT_IDS, Progress, event_frame, event_record, session_key
from stream.cluster.statecodec import StateBlob, StateError, decode_state, encode_state
from stream.frames import EventFrame, EventKind
from stream.params import WorkerParams


def test_progress_round_trips_and_refuses_wrong_types() -> None:
    p = Progress(last_seq=9, steps=4, recent=["u1"], blob="b.x.3.ab", blob_steps=3, blob_seq=7,
                 events=[{"kind": "emotion", "payload": {"a": 1}, "speaker": None}], worker="w#1")
    assert Progress.decode(p.encode()) == p
    for bad in (b"[]", b"{", b'{"last_seq": -1}', b'{"steps": true}', b'{"recent": [3]}', b'{"owner": "x"}',
                b'{"blob": 5}', b'{"events": ["x"]}', b"[" * 5000):
        with pytest.raises(ValueError) as e:
            Progress.decode(bad)
        assert "\n" not in str(e.value)


def test_progress_remembers_a_bounded_window_of_ids() -> None:
    p = Progress()
    for i in range(RECENT_IDS + 10):
        p.remember(f"u{i}")
    assert len(p.recent) == RECENT_IDS and p.recent[0] == "u10" and p.recent[-1] == f"u{RECENT_IDS + 9}"


@pytest.mark.parametrize("session", ["m1", "a.b c/d+#", "Ünï", "x" * 128])
def test_session_keys_are_valid_kv_keys_and_distinct(session: str) -> None:
    key = session_key(3, session)
    assert key.startswith("3.") and all(c.isalnum() or c in "-_." for c in key)
    assert session_key(3, session + "x") != key and session_key(4, session) != key


def test_stored_events_come_back_identical() -> None:
    frame = EventFrame(session_id="s", kind=EventKind.SPEAKER, payload={"type": "speaker", "v": [1, 2]},
                       speaker="Alice")
    rec = json.loads(json.dumps(event_record(frame)))  # as it travels through the progress record
    back = event_frame("s", rec)
    assert (back.kind, back.payload, back.speaker, back.session_id) == (frame.kind, frame.payload, "Alice", "s")


@pytest.mark.parametrize("kw", [{"worker_id": "a/b"}, {"worker_id": ""}, {"worker_id": "w", "member": 2, "members": 2},
                                {"worker_id": "w", "state_every": 0}])
def test_bad_worker_parameters_are_refused(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        WorkerParams(**kw)  # type: ignore[arg-type]


# -- state blob -----------------------------------------------------------------------------------------


def test_state_blob_round_trip_is_exact() -> None:
    rng = np.random.default_rng(0)
    arrays = {"h": rng.normal(size=(2, 3)).astype(np.float32), "slots": np.array([0, 1, -1], dtype=np.int64)}
    blob = StateBlob("s1", 4, "w2", 17, ["#15", "#16"], {"engine": "toy", "x": [1, 2]}, arrays)
    back = decode_state(encode_state(blob), expect_session="s1")
    assert (back.session, back.epoch, back.worker, back.next_seq, back.recent, back.engine) == \
        ("s1", 4, "w2", 17, ["#15", "#16"], {"engine": "toy", "x": [1, 2]})
    for k, v in arrays.items():
        assert back.arrays[k].dtype == v.dtype and np.array_equal(back.arrays[k], v)


def test_state_blob_rejects_oversize_wrong_session_and_corruption() -> None:
    blob = StateBlob("s1", 1, "w", 0, [], {}, {"h": np.zeros(1000, dtype=np.float32)})
    with pytest.raises(StateError, match="limit"):
        encode_state(blob, max_bytes=1000)
    data = encode_state(blob)
    with pytest.raises(StateError, match="belongs to session"):
        decode_state(data, expect_session="other")
    for bad in (b"", b"\x00" * 7, data[:50], b"\xff" * 8 + data[8:], data[:-100]):
        with pytest.raises(StateError):
            decode_state(bad, expect_session="s1")
    import safetensors.numpy

    foreign = safetensors.numpy.save({"h": np.zeros(2, dtype=np.float32)})  # no cluster header
    with pytest.raises(StateError, match="metadata"):
        decode_state(foreign)
