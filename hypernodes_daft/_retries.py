"""Retries with exponential backoff and per-call timeouts (`@node(retries=, timeout=)`).

    call = with_retries(with_timeout(func, is_async, 5.0), retries=3, backoff=0.1,
                        retry_on=(TimeoutError, ConnectionError))

Backoff waits `backoff * 2**attempt` seconds plus up to `backoff` of random jitter
(tenacity) and never holds a concurrency slot: the limit wraps one attempt.
An async call past its timeout is cancelled; a sync one cannot be interrupted, so the caller
stops waiting, raises TimeoutError, and the call finishes in its thread, ignored.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections.abc import Callable
from typing import Any

import tenacity

_timeouts = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="hypernodes-timeout")


def with_timeout(func: Callable[..., Any], is_async: bool, seconds: float) -> Callable[..., Any]:
    """`func`, failing with TimeoutError when a call takes longer than `seconds`."""
    if is_async:

        @functools.wraps(func)
        async def bounded_async(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.wait_for(func(*args, **kwargs), seconds)

        return bounded_async

    @functools.wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        future = _timeouts.submit(func, *args, **kwargs)
        try:
            return future.result(timeout=seconds)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"call took longer than {seconds} s") from None

    return bounded


def with_retries(
    func: Callable[..., Any],
    retries: int,
    backoff: float,
    retry_on: tuple[type[BaseException], ...],
) -> Callable[..., Any]:
    """`func` called up to `retries + 1` times while it raises one of `retry_on`."""
    policy = {
        "stop": tenacity.stop_after_attempt(retries + 1),
        "wait": tenacity.wait_exponential(multiplier=backoff) + tenacity.wait_random(0, backoff),
        "retry": tenacity.retry_if_exception_type(retry_on),
        "reraise": True,  # the node's own exception, not tenacity's RetryError
    }
    return tenacity.retry(**policy)(func)  # for coroutine functions it sleeps with asyncio
