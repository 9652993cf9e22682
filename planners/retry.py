"""Retry a planning call once after an infrastructure failure, then fail loudly: a proposal is never silently dropped.

The reference planner drops proposals that miss a 15 s deadline; we retry the call once when the
failure was the machinery's (a replica actor died or is unreachable, a node or worker went away, a
get timed out, a connection broke: by then ReplicaClient has failed over, a transient error has
passed) and otherwise raise PlanningError chained to the cause, so the episode row records why the
step failed. An exception raised by the policy's own code (a bug, a bad shape, a diverged
simulation; through Ray a RayTaskError wrapping it) would only fail again: it is raised at once.
"""
from __future__ import annotations

import logging
from typing import Callable, TypeVar

from robofleet.planners.contract import PlanningError

log = logging.getLogger(__name__)

T = TypeVar("T")


def _infrastructure_errors() -> tuple[type[BaseException], ...]:
    kinds: list[type[BaseException]] = [ConnectionError, TimeoutError]
    try:
        from ray import exceptions as ray_errors
    except ImportError:  # an env worker without Ray talks to no replica
        return tuple(kinds)
    names = ("RayActorError", "GetTimeoutError", "WorkerCrashedError", "NodeDiedError", "ObjectLostError",
             "LocalRayletDiedError", "RaySystemError", "ActorPlacementGroupRemoved", "ActorUnschedulableError")
    kinds += [getattr(ray_errors, name) for name in names if hasattr(ray_errors, name)]
    return tuple(kinds)


def is_infrastructure_failure(error: BaseException) -> bool:
    """True for a failure of the machinery (Ray actor/node/object/timeout, connection), not of the policy's code.

    A RayTaskError carries an exception the remote code raised: never infrastructure, even when
    Ray makes it an instance of the cause's class too.
    """
    try:
        from ray.exceptions import RayTaskError
    except ImportError:
        RayTaskError = ()  # type: ignore[assignment,misc]  # noqa: N806
    if RayTaskError and isinstance(error, RayTaskError):
        return False
    return isinstance(error, _infrastructure_errors())


def retry_once(what: str, call: Callable[[], T], on_retry: Callable[[], None] | None = None) -> tuple[T, int]:
    """Run `call`; after an infrastructure failure run it once more. Returns (result, retries used: 0 or 1).

    what: names the call in the log and in the error ("4 proposals", "oracle score of proposal 2").
    on_retry: run before the second attempt (e.g. restore the simulator).
    Raises PlanningError chained to the cause: at once for an error of the policy's code, after the
    second attempt for a second failure.
    """
    try:
        return call(), 0
    except Exception as first:
        if not is_infrastructure_failure(first):
            raise PlanningError(f"{what} failed (not retried: an error of the policy's code, not of the "
                                f"infrastructure): {type(first).__name__}: {first}") from first
        log.warning("%s failed (%s: %s); retrying once", what, type(first).__name__, first)
    if on_retry is not None:
        on_retry()
    try:
        return call(), 1
    except Exception as second:
        raise PlanningError(f"{what} failed twice; last error: {type(second).__name__}: {second}") from second
