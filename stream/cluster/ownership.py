"""Who owns which conversation, as one worker sees it: pure logic, no I/O (unit-tested on its own).

The no-two-owners rule
----------------------
1. A worker may claim a conversation only when its current owner record is absent, ``released``, or
   names a worker life (worker id + incarnation) that is not online.
2. A claim is the record ``(epoch = current epoch + 1, worker, incarnation)``, published retained.
3. Records are totally ordered by ``(epoch, rendezvous_score(session, worker))``. Every worker keeps, per
   conversation, the highest record it has seen and never goes back. All workers see the same records
   (retained + live), so they converge on the same owner.
4. A claimant waits a settle period, then owns the conversation only if its claim is still the highest.
5. Fencing: before every publish of events/state the owner checks that its claim is still the highest;
   a worker that sees a higher record stops at once (drops its copy, forwards buffered inputs).

Rules 3-5 mean two workers can believe they own a conversation only between a higher claim being
published and the lower claimant receiving it (one broker round trip); in that window both compute the
same deterministic step from the same state, and event ids are deterministic, so consumers that
de-duplicate by event id see each event once (docs/deployment.md, "Failure model").
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from stream.cluster.records import OwnerRecord, WorkerRecord, rendezvous_score

__all__ = ["ClusterView"]


class ClusterView:
    """The latest worker and owner records this worker has received."""

    def __init__(self) -> None:
        self.workers: dict[str, WorkerRecord] = {}
        self.owners: dict[str, OwnerRecord] = {}

    # -- updates ------------------------------------------------------------------------------------

    def observe_worker(self, rec: WorkerRecord) -> WorkerRecord | None:
        """Stores a worker record; returns the previous life of that worker if it just ended.

        A life ends when its record turns ``offline`` or a record with another incarnation arrives.
        """
        prev = self.workers.get(rec.worker)
        self.workers[rec.worker] = rec
        if prev is None or prev.status != "online":
            return None
        if rec.status == "offline" or rec.incarnation != prev.incarnation:
            return prev
        return None

    def observe_owner(self, rec: OwnerRecord) -> bool:
        """Stores an owner record if it ranks at least as high as the current one; True if it did."""
        cur = self.owners.get(rec.session)
        if cur is not None and rec.rank() < cur.rank():
            return False
        self.owners[rec.session] = rec
        return True

    def forget(self, session: str) -> None:
        self.owners.pop(session, None)

    # -- queries ------------------------------------------------------------------------------------

    def owner(self, session: str) -> OwnerRecord | None:
        return self.owners.get(session)

    def is_alive(self, worker: str, incarnation: str) -> bool:
        rec = self.workers.get(worker)
        return rec is not None and rec.status == "online" and rec.incarnation == incarnation

    def live_workers(self) -> list[str]:
        return sorted(w for w, rec in self.workers.items() if rec.status == "online")

    def claimable(self, session: str) -> bool:
        """Rule 1: no owner, a released conversation, or an owner whose life has ended."""
        rec = self.owners.get(session)
        return rec is None or rec.status == "released" or not self.is_alive(rec.worker, rec.incarnation)

    def next_epoch(self, session: str) -> int:
        rec = self.owners.get(session)
        return 1 if rec is None else rec.epoch + 1

    def holds(self, claim: OwnerRecord) -> bool:
        """Rule 4/5: the claim is (still) the highest record this worker has seen."""
        return claim.same_claim(self.owners.get(claim.session))

    def orphans_of(self, life: WorkerRecord) -> Iterator[str]:
        """Conversations owned by a worker life that has just ended."""
        for session, rec in self.owners.items():
            if rec.status == "owned" and rec.worker == life.worker and rec.incarnation == life.incarnation:
                yield session

    def orphans(self) -> Iterator[str]:
        """Conversations whose owning life is not online (e.g. seen at start-up)."""
        for session, rec in self.owners.items():
            if rec.status == "owned" and not self.is_alive(rec.worker, rec.incarnation):
                yield session

    def adopter(self, session: str, candidates: Iterable[str] | None = None) -> str | None:
        """The live worker that should adopt an orphaned conversation (highest rendezvous score).

        Spreads the orphans of a dead worker evenly over the survivors, and every survivor computes the
        same answer, so normally exactly one of them claims each orphan.
        """
        pool = list(self.live_workers() if candidates is None else candidates)
        if not pool:
            return None
        return max(pool, key=lambda w: (rendezvous_score(session, w), w))
