"""Poll a condition until it holds or a deadline passes: synchronisation without bare sleeps."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class GiveUp(Exception):
    """Raised by a predicate when waiting longer cannot help (e.g. the process died)."""


async def wait_for(
    predicate: Callable[[], T | Awaitable[T]],
    timeout: float = 30.0,
    interval: float = 0.1,
    message: str = "condition",
) -> T:
    """Return the first truthy result of ``predicate`` (sync or async).

    Exceptions from the predicate count as "not yet" (an object may not exist yet); the last one
    is chained to the TimeoutError raised after ``timeout`` seconds so a failure says why.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    error: BaseException | None = None
    while True:
        try:
            result = predicate()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result  # type: ignore[return-value]
            last, error = result, None
        except GiveUp:
            raise
        except Exception as exc:
            error = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(_timeout_message(timeout, message, last)) from error
        await asyncio.sleep(interval)


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.1,
    message: str = "condition",
) -> T:
    """The synchronous twin of :func:`wait_for`, for code that has no event loop (``up``)."""
    deadline = time.monotonic() + timeout
    last: object = None
    error: BaseException | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
            last, error = result, None
        except GiveUp:
            raise
        except Exception as exc:
            error = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(_timeout_message(timeout, message, last)) from error
        time.sleep(interval)


def _timeout_message(timeout: float, message: str, last: object) -> str:
    return f"timed out after {timeout:g}s waiting for {message} (last result: {last!r})"
