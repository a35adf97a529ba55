"""Pure parts of the cluster layer: records, the ownership rule, the sequencer, the state blob."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.cluster.ownership import ClusterView
from stream.cluster.records import (
    AckRecord,
    OwnerRecord,
    RecordError,
    WorkerRecord,
)
from stream.cluster.sequencer import Sequencer
from stream.cluster.statecodec import StateBlob, StateError, decode_state, encode_state
from stream.mqtt.topics import (
    owner_filter,
    owner_topic,
    session_from_topic,
    shared_input_filter,
    worker_topic,
)

# -- records and topics ---------------------------------------------------------------------------------


def test_records_round_trip_and_reject_garbage() -> None:
    rec = OwnerRecord.claim("s/1", "w1", "abc", 3)
    assert OwnerRecord.decode(rec.encode()) == rec
    wr = WorkerRecord("w1", "abc", "online", 1.0, 42)
    assert WorkerRecord.decode(wr.encode()) == wr
    ack = AckRecord("s", 7, 2, "w1", 1.0)
    assert AckRecord.decode(ack.encode()) == ack
    for bad in (b"", b"{", b"[]", b'{"v": 2}', b'{"v":1,"session":"s","worker":"w","incarnation":"i","epoch":0,'
                b'"status":"owned"}', b'{"v":1,"session":"s","worker":"w","incarnation":"i","epoch":true}',
                b"x" * 5000):
        with pytest.raises(RecordError):
            OwnerRecord.decode(bad, "pcgnet/s/owner")


def test_topics_cannot_be_confused_by_hostile_ids() -> None:
    # A session id that tries to look like a cluster topic or inject wildcards stays one level.
    for sid in ("$cluster", "a/b", "+", "#", "x/owner", "workers"):
        t = owner_topic(sid)
        assert t.count("/") == 2 and "+" not in t and "#" not in t
        assert session_from_topic(t, "owner") == sid
    assert worker_topic("w1").startswith("pcgnet/$cluster/workers/")
    assert owner_filter() == "pcgnet/+/owner"
    assert shared_input_filter("g") == "$share/g/pcgnet/+/in/utterance"
    with pytest.raises(ValueError):
        shared_input_filter("a/b")


# -- the no-two-owners rule -----------------------------------------------------------------------------


def _online(view: ClusterView, *workers: str) -> None:
    for w in workers:
        view.observe_worker(WorkerRecord(w, f"{w}-inc", "online"))


def test_claimable_only_when_owner_absent_released_or_dead() -> None:
    v = ClusterView()
    _online(v, "a", "b")
    assert v.claimable("s") and v.next_epoch("s") == 1
    v.observe_owner(OwnerRecord.claim("s", "a", "a-inc", 1))
    assert not v.claimable("s")
    ended = v.observe_worker(WorkerRecord("a", "a-inc", "offline"))
    assert ended is not None and list(v.orphans_of(ended)) == ["s"]
    assert v.claimable("s") and v.next_epoch("s") == 2
    # a restarted worker with the same id is a new life: its old conversations stay orphaned
    v.observe_worker(WorkerRecord("a", "a-new", "online"))
    assert v.claimable("s")
    v.observe_owner(OwnerRecord("s", "b", "b-inc", 2, "released"))
    assert v.claimable("s") and v.next_epoch("s") == 3


def test_lower_epoch_records_never_win_and_ties_are_deterministic() -> None:
    v = ClusterView()
    hi = OwnerRecord.claim("s", "a", "i", 5)
    assert v.observe_owner(hi)
    assert not v.observe_owner(OwnerRecord.claim("s", "b", "i", 4))
    assert v.owner("s") is hi
    x, y = OwnerRecord.claim("t", "a", "i", 2), OwnerRecord.claim("t", "b", "i", 2)
    winner = max((x, y), key=OwnerRecord.rank)
    for order in ((x, y), (y, x)):
        w = ClusterView()
        for r in order:
            w.observe_owner(r)
        assert w.owner("t") is winner
        assert w.holds(winner) and not w.holds(x if winner is y else y)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4), st.sampled_from("abcd")), min_size=1, max_size=12, unique=True),
       st.randoms(use_true_random=False))
def test_every_delivery_order_converges_on_one_owner(claims: list[tuple[int, str]], rnd) -> None:
    """Workers that receive the same claims in different orders agree on the owner (rule 3)."""
    records = [OwnerRecord.claim("s", w, f"{w}-inc", e) for e, w in claims]
    owners = set()
    for _ in range(4):
        order = records[:]
        rnd.shuffle(order)
        view = ClusterView()
        for r in order:
            view.observe_owner(r)
        owners.add(view.owner("s"))
    assert len(owners) == 1
    (owner,) = owners
    # at most one claimant holds its claim, and it is the highest-ranked one
    holders = [r for r in records if ClusterView.holds(_view_with(records), r)]
    assert {(h.worker, h.epoch) for h in holders} == {(owner.worker, owner.epoch)}


def _view_with(records: list[OwnerRecord]) -> ClusterView:
    v = ClusterView()
    for r in records:
        v.observe_owner(r)
    return v


def test_adopter_is_agreed_and_spreads_orphans() -> None:
    views = [ClusterView() for _ in range(3)]
    for v in views:
        _online(v, "a", "b", "c")
    sessions = [f"m{i}" for i in range(300)]
    picks = [[v.adopter(s) for s in sessions] for v in views]
    assert picks[0] == picks[1] == picks[2]
    counts = {w: picks[0].count(w) for w in "abc"}
    assert min(counts.values()) > 60, counts  # roughly a third each


# -- sequencer ------------------------------------------------------------------------------------------


def test_sequencer_orders_and_deduplicates() -> None:
    seq: Sequencer[str] = Sequencer()
    assert seq.offer(1, "#1", "b") == "accepted"
    assert seq.ready() == []  # waits for 0
    assert seq.offer(0, "#0", "a") == "accepted"
    assert seq.offer(0, "#0", "a") == "duplicate"
    got = []
    for s, k, item in seq.ready():
        got.append(item)
        seq.done(s, k)
    assert got == ["a", "b"] and seq.next_seq == 2
    assert seq.offer(1, "#1", "b") == "duplicate"
    with pytest.raises(ValueError):
        seq.done(5, "#5")


def test_sequencer_without_seq_uses_arrival_order_and_keys() -> None:
    seq: Sequencer[str] = Sequencer(next_seq=10, recent=["id:u1"])
    assert seq.offer(None, "id:u1", "old") == "duplicate"
    assert seq.offer(None, "id:u2", "x") == "accepted"
    assert seq.offer(None, "id:u2", "x") == "duplicate"
    assert seq.offer(None, "id:u3", "y") == "accepted"
    assert [s for s, _, _ in seq.ready()] == [10, 11]


def test_sequencer_skips_a_gap_only_after_the_timeout_and_is_bounded() -> None:
    now = [0.0]
    seq: Sequencer[int] = Sequencer(gap_timeout_s=5.0, max_pending=3, clock=lambda: now[0])
    for s in (2, 3, 4):
        assert seq.offer(s, f"#{s}", s) == "accepted"
    assert seq.offer(5, "#5", 5) == "overflow"
    assert seq.ready() == [] and seq.skip_gap() == 0
    now[0] = 4.9
    assert seq.skip_gap() == 0
    now[0] = 5.1
    assert seq.skip_gap() == 2 and seq.skipped == 2
    assert [s for s, _, _ in seq.ready()] == [2, 3, 4]


@settings(max_examples=100, deadline=None)
@given(st.permutations(list(range(12))), st.lists(st.integers(0, 11), max_size=12))
def test_any_arrival_order_with_duplicates_processes_each_once_in_order(order: list[int], dups: list[int]) -> None:
    seq: Sequencer[int] = Sequencer(max_pending=64)
    processed: list[int] = []
    for s in itertools.chain(order, dups):
        seq.offer(s, f"#{s}", s)
        for n, k, item in seq.ready():
            processed.append(item)
            seq.done(n, k)
    assert processed == list(range(12))


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
