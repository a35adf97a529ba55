"""Named, supervised asyncio tasks.

Every task of the runtime is started here under a name ``stream[<session>].<stage>``, so that an
unexpected exception is logged with the task's name instead of vanishing, nothing is garbage
collected while running (RUF006), and shutdown can cancel with a timeout and report what hung.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)


class OnError(enum.StrEnum):
    """What a task's unexpected exception does to the runtime."""

    CONTINUE = "continue"  # log it; the rest keeps running (a capture device, one sink)
    CANCEL = "cancel"  # log it and stop the whole runtime (the inference worker)


def task_name(session: str, stage: str) -> str:
    return f"stream[{session}].{stage}"


MAX_FAILURES_KEPT = 100


def failure_reason(exc: BaseException) -> str:
    """One line for an exception: a TaskGroup's ExceptionGroup is named by its first leaf, not by the group."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class Supervisor:
    """Owns a set of tasks (the runtime's, or one cluster worker life's).

    Args:
        on_fatal: called (once) when a task with ``OnError.CANCEL`` fails.
        expected: exception types that are part of normal operation (a broker going away): logged as a
            one-line warning instead of an error (``OnError`` still applies).
    """

    def __init__(self, on_fatal: Callable[[str, BaseException], None] | None = None, *,
                 expected: tuple[type[Exception], ...] = ()) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._on_fatal = on_fatal
        self._expected = expected
        self.failures: list[tuple[str, str]] = []  # the latest MAX_FAILURES_KEPT (long-lived workers)

    def spawn(self, name: str, coro: Coroutine[Any, Any, Any], on_error: OnError = OnError.CONTINUE
              ) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(self._guard(name, coro, on_error), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # A task cancelled before its first step never starts ``coro``: close it, or Python warns that it
        # was never awaited (closing a finished coroutine does nothing).
        task.add_done_callback(lambda _t: coro.close())
        return task

    async def _guard(self, name: str, coro: Coroutine[Any, Any, Any], on_error: OnError) -> Any:
        try:
            return await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the supervisor is the boundary that reports task failures
            self.failures.append((name, f"{type(exc).__name__}: {exc}"))
            del self.failures[:-MAX_FAILURES_KEPT]
            if isinstance(exc, self._expected):
                log.warning("task %s: %s: %s", name, type(exc).__name__, exc)
            else:
                log.error("task %s failed: %s: %s", name, type(exc).__name__, exc,
                          exc_info=log.isEnabledFor(logging.DEBUG))
            if on_error is OnError.CANCEL and self._on_fatal is not None:
                self._on_fatal(name, exc)
            return None

    @property
    def names(self) -> list[str]:
        return sorted(t.get_name() for t in self._tasks)

    def cancel_now(self) -> list[str]:
        """Cancel every task without waiting (the owner is itself being torn down); returns their names."""
        tasks = [t for t in self._tasks if not t.done()]
        for t in tasks:
            t.cancel()
        return sorted(t.get_name() for t in tasks)

    async def cancel_all(self, timeout_s: float) -> list[str]:
        """Cancel every task and wait up to ``timeout_s``; returns the names of tasks still running."""
        tasks = [t for t in self._tasks if not t.done()]
        for t in tasks:
            t.cancel()
        if not tasks:
            return []
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        dangling = sorted(t.get_name() for t in pending)
        if dangling:
            log.warning("dangling tasks after %.1f s: %s", timeout_s, ", ".join(dangling))
        return dangling
