"""Bounded waits: every wait in asyncrl has a timeout and says what it waited for."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("asyncrl.waits")


class WaitTimeout(TimeoutError):
    """A bounded wait ran out; the message names what was awaited."""


async def bounded(awaitable: Awaitable[T], timeout_s: float, what: str) -> T:
    """Await `awaitable` for at most `timeout_s`, or raise WaitTimeout naming `what`."""
    try:
        return await asyncio.wait_for(_as_coroutine(awaitable), timeout_s)
    except TimeoutError as exc:
        log.error("timed out after %.0fs waiting for %s", timeout_s, what)
        raise WaitTimeout(f"timed out after {timeout_s:.0f}s waiting for {what}") from exc


async def _as_coroutine(awaitable: Awaitable[T]) -> T:
    return await awaitable
