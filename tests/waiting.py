"""Wait on a condition with a generous deadline instead of sleeping a fixed time or asserting a duration.

A fixed sleep is either too short on a loaded CI machine (a flaky failure) or longer than needed everywhere;
a deadline is only reached when the condition never comes, which is the failure the test is about.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

DEADLINE_S = 30.0


async def until(pred: Callable[[], bool], what: str = "the condition", timeout_s: float = DEADLINE_S,
                poll_s: float = 0.01) -> None:
    """Return as soon as ``pred()`` holds; fail naming ``what`` after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while not pred():
        if loop.time() > end:
            raise AssertionError(f"not reached within {timeout_s:g} s: {what}")
        await asyncio.sleep(poll_s)
