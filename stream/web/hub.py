"""What the dashboard's open pages share: a bounded history per session, so a page opened late is sent
the session so far, and one bounded queue per page, so a slow or dead browser never slows the analysis.

Every event is serialised once, numbered (``seq``) and handed to each page with ``put_nowait`` (policy:
drop oldest, counted per page). Registering a page and taking its backlog happen without an ``await``
between them, so a page sees every event exactly once: from the backlog or from its queue.
"""

from __future__ import annotations

import collections
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..channel import Channel, FullPolicy
from ..params import WebParams
from ..sinks.jsonl import dumps  # compact, one line: an SSE ``data:`` field must hold no newline


@dataclass(frozen=True, slots=True)
class WireEvent:
    """One message for the pages. ``seq`` is None for transient messages (figures) kept out of history."""

    data: str
    seq: int | None = None


class Page:
    """One open page: its bounded queue and how many events it missed because it did not keep up."""

    def __init__(self, page_id: int, maxsize: int) -> None:
        self.page_id = page_id
        self.queue: Channel[WireEvent] = Channel(f"web.page{page_id}", maxsize, FullPolicy.DROP_OLDEST)
        self.evicted = False
        """A newer page took this one's slot (its stream says so and ends)."""

    @property
    def dropped(self) -> int:
        return self.queue.dropped


class DashboardHub:
    """History and fan-out of the dashboard's events (event loop only).

    Args:
        params: history and queue bounds.
    """

    def __init__(self, params: WebParams) -> None:
        self.params = params
        self.instance = secrets.token_hex(4)
        """Changes with every process, so a page reconnecting to a new process starts afresh."""
        self.pages: dict[int, Page] = {}
        self.latest_figures: WireEvent | None = None
        self._history: collections.OrderedDict[str, collections.deque[WireEvent]] = collections.OrderedDict()
        self._seq = 0
        self._next_page = 0

    def publish(self, obj: dict[str, Any]) -> None:
        """An event of a session: kept in that session's history and queued for every page."""
        self._seq += 1
        ev = WireEvent(dumps(obj), self._seq)
        session = str(obj.get("session") or "")
        hist = self._history.get(session)
        if hist is None:
            hist = self._history[session] = collections.deque(maxlen=self.params.history_events_per_session)
            while len(self._history) > self.params.history_sessions:
                self._history.popitem(last=False)
        self._history.move_to_end(session)
        hist.append(ev)
        self._fan_out(ev)

    def publish_transient(self, obj: dict[str, Any]) -> None:
        """Figures (latency, queues): not history, but the latest is sent to a page when it opens."""
        ev = WireEvent(dumps(obj))
        self.latest_figures = ev
        self._fan_out(ev)

    def _fan_out(self, ev: WireEvent) -> None:
        for page in self.pages.values():
            if not page.queue.closed:
                page.queue.put_nowait(ev)

    def event_id(self, seq: int) -> str:
        return f"{self.instance}.{seq}"

    def _resume_after(self, last_event_id: str | None) -> int | None:
        """The seq a reconnecting page already has, when it comes from this process."""
        if not last_event_id:
            return None
        instance, _, seq = last_event_id.partition(".")
        if instance != self.instance or not (seq.isascii() and seq.isdigit()) or len(seq) > 18:
            return None
        return int(seq)

    def attach(self, last_event_id: str | None = None) -> tuple[Page, list[WireEvent], bool]:
        """Register a page; returns (page, backlog, resumed). With ``max_clients`` pages open, the oldest
        is evicted first: a page that stopped reading, or was left open, cannot lock newer ones out.

        ``resumed``: the page already holds the events up to ``last_event_id`` (an EventSource reconnect),
        so only later ones are in the backlog; otherwise the backlog is every kept event.
        """
        while len(self.pages) >= self.params.max_clients:
            oldest = self.pages.pop(next(iter(self.pages)))
            oldest.evicted = True
            oldest.queue.close()
        after = self._resume_after(last_event_id)
        backlog = sorted((ev for ev in self._iter_history() if after is None or (ev.seq or 0) > after),
                         key=lambda ev: ev.seq or 0)
        self._next_page += 1
        page = Page(self._next_page, self.params.client_queue_events)
        self.pages[page.page_id] = page
        return page, backlog, after is not None

    def _iter_history(self) -> Iterator[WireEvent]:
        for hist in self._history.values():
            yield from hist

    def detach(self, page: Page) -> None:
        page.queue.close()
        self.pages.pop(page.page_id, None)

    def close(self) -> None:
        """End every page's stream (the server is stopping)."""
        for page in list(self.pages.values()):
            page.queue.close()
