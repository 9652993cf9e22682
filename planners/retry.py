"""Retry a planning call once, then fail loudly: a proposal is never silently dropped.

The reference planner drops proposals that miss a 15 s deadline; we retry the call once (a replica
that died has by then been failed over by ReplicaClient, a transient error has passed) and otherwise
raise PlanningError chained to the cause, so the episode row records why the step failed.
"""
from __future__ import annotations

import logging
from typing import Callable, TypeVar

from robofleet.planners.contract import PlanningError

log = logging.getLogger(__name__)

T = TypeVar("T")


def retry_once(what: str, call: Callable[[], T], on_retry: Callable[[], None] | None = None) -> tuple[T, int]:
    """Run `call`; on an exception run it once more. Returns (result, retries used: 0 or 1).

    what: names the call in the log and in the error ("4 proposals", "oracle score of proposal 2").
    on_retry: run before the second attempt (e.g. restore the simulator).
    Raises PlanningError (from the second exception) when both attempts fail.
    """
    try:
        return call(), 0
    except Exception as first:  # noqa: BLE001 - retried once, then raised with its cause
        log.warning("%s failed (%s: %s); retrying once", what, type(first).__name__, first)
    if on_retry is not None:
        on_retry()
    try:
        return call(), 1
    except Exception as second:
        raise PlanningError(f"{what} failed twice; last error: {type(second).__name__}: {second}") from second
