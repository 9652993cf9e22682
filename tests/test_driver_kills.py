"""Driver death at random points: a run killed again and again, and resumed each time, ends with
exactly the rows of an undisturbed run, each episode once.

The driver is `runner.run` in this process (sharing the test's Ray cluster, so a restart costs only
new env workers). It is killed at the n-th line the driver executes in robofleet's own driver code
(`platform/`), n drawn from a seeded generator: every statement of the driver is a possible kill
point (scheduling, the row write and its fsync, the report writing, start-up), weighted by how often
it runs. The kill is an exception the driver cannot catch (BaseException, raised from a trace
function), so `finally` blocks do run, unlike after SIGKILL; they only stop actors, and neither
writes rows. A real SIGKILL of a `robofleet run` process (and of the Ray cluster it started) is
tests/test_sweeps.py::test_a_killed_sweep_resumes_to_the_rows_of_an_uninterrupted_one.

Cheapest real episodes: the zero policy, 1 step, no cameras, hard resets (bit-identical episodes:
the final-state hashes must match), libero_goal task 0 (the quickest LIBERO scene to build).
"""
from __future__ import annotations

import csv
import json
import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np

import robofleet.platform.runner as runner
from robofleet.platform.results import EPISODE_COLUMNS
from robofleet.platform.spec import spec_from_dict

DRIVER_CODE = os.path.dirname(runner.__file__)
IDENTITY = ("episode_id", "success", "steps", "queries", "final_state", "error", "attempts")
KILL_SEED = 8  # issue 8
PHASE_KILLS = {"start-up": 7, "episodes": 8, "reports": 7}  # >= 20 fire; episodes' kills come before reports'
EPISODES = 10
SPEC = {
    "seed": 3,
    "env": {"family": "libero", "suite": "libero_goal", "tasks": [0], "trials": EPISODES, "image_size": 32,
            "render_cameras": False, "max_steps": 1, "reset": "hard"},
    "policy": {"name": "zero", "chunk_size": 1},
    "run": {"workers": 1, "max_attempts": 1},
}


class DriverKilled(BaseException):
    """The driver's death: not an Exception, so no `except Exception` in the driver can survive it."""


class DriverTrace:
    """A trace function over the driver's own code (DRIVER_CODE). It follows the driver's phase
    (start-up until the first episode is submitted, episodes until the reports are written, reports)
    and counts the lines executed in each; with `kill = (phase, k)` it raises DriverKilled at the k-th
    line of `phase` (or, should that phase end sooner, at the first line after it). Python turns
    tracing off when a trace function raises, so the `finally` blocks that follow run untraced."""

    def __init__(self, kill: tuple[str, int] | None = None):
        self.kill = kill
        self.phase = "start-up"
        self.lines: Counter = Counter()  # phase -> lines executed
        self.killed_at = ""

    def __call__(self, frame, event, arg):
        return self._line if frame.f_code.co_filename.startswith(DRIVER_CODE) else None

    def _line(self, frame, event, arg):
        if event != "line":
            return self._line
        name = frame.f_code.co_name
        was = self.phase
        if name == "submit" and self.phase == "start-up":
            self.phase = "episodes"
        elif name == "write_run_report":
            self.phase = "reports"
        self.lines[self.phase] += 1
        if self.kill and (self.kill == (self.phase, self.lines[self.phase]) or self.kill[0] == was != self.phase):
            self.killed_at = f"{self.kill[0]}: {Path(frame.f_code.co_filename).name}:{name}"
            raise DriverKilled(f"{self.killed_at}:{frame.f_lineno}")
        return self._line

    def run(self, spec, out: Path) -> bool:
        """runner.run under this trace; True when it was killed."""
        sys.settrace(self)
        try:
            runner.run(spec, out, progress=False)
        except DriverKilled:
            return True
        finally:
            sys.settrace(None)
        return False


def kill_points(reference: DriverTrace, rng: np.random.Generator) -> list[tuple[str, int]]:
    """PHASE_KILLS[phase] random lines of each phase, as long as that phase was in the undisturbed run.
    An episode-loop kill falls within one episode's worth of lines, so each resume records at most
    about one episode and the loop is still running at the next kill; report kills come last."""
    points = {}
    for phase, n in PHASE_KILLS.items():
        lines = reference.lines[phase] // (EPISODES if phase == "episodes" else 1)
        points[phase] = [(phase, int(k)) for k in rng.integers(1, lines + 1, size=n)]
    early = points["start-up"] + points["episodes"]
    rng.shuffle(early)
    return early + points["reports"]


def rows(out: Path) -> list[dict[str, str]]:
    path = out / "episodes.csv"
    if not path.exists():
        return []
    with path.open(newline="") as f:
        found = list(csv.DictReader(f))
    for row in found:  # a torn or merged line would leave fields empty or spill into extra ones
        assert None not in row and None not in row.values() and list(row) == list(EPISODE_COLUMNS), row
    return found


def identity(found: list[dict[str, str]]) -> dict[str, tuple[str, ...]]:
    ids = [r["episode_id"] for r in found]
    assert len(ids) == len(set(ids)), f"an episode was recorded twice: {Counter(ids).most_common(1)}"
    return {r["episode_id"]: tuple(r[k] for k in IDENTITY) for r in found}


def test_a_driver_killed_at_20_random_points_resumes_to_the_rows_of_an_undisturbed_run(ray_cluster, tmp_path):
    spec = spec_from_dict(SPEC)
    reference = DriverTrace()
    assert not reference.run(spec, tmp_path / "undisturbed")
    expected = identity(rows(tmp_path / "undisturbed"))
    assert len(expected) == EPISODES and all(r[4] for r in expected.values()), "every episode has a final state"

    out, killed_at = tmp_path / "killed", []
    for point in kill_points(reference, np.random.default_rng(KILL_SEED)):
        driver = DriverTrace(point)
        if not driver.run(spec, out):  # a report kill beyond the (shorter) reports of a finished run
            assert point[0] == "reports", f"the driver reached its kill point {point}"
            continue
        killed_at.append(driver.killed_at)
        recorded = identity(rows(out))
        assert all(expected[k] == v for k, v in recorded.items()), "every recorded row is the undisturbed one"
        assert point[0] != "episodes" or len(recorded) < EPISODES, "episode-loop kills land in a running loop"
    assert len(killed_at) >= 20, killed_at

    assert not DriverTrace().run(spec, out), "the last resume finishes"
    assert identity(rows(out)) == expected
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["episodes"] == EPISODES and summary["overall"]["errors"] == 0
    print(f"\n{len(killed_at)} kills; where: {dict(Counter(killed_at).most_common())}")


def test_an_empty_episode_file_left_by_a_killed_driver_gets_its_header_back(tmp_path):
    from robofleet.platform.results import RunStore

    spec = spec_from_dict(SPEC)
    RunStore(tmp_path, spec).episodes_path.touch()  # killed after open(), before the header reached the disk
    store = RunStore(tmp_path, spec)
    store.append({"episode_id": "e0", "success": 1})
    assert [r["episode_id"] for r in rows_of(store)] == ["e0"]


def test_a_torn_last_row_is_dropped_and_its_episode_runs_again(tmp_path):
    from robofleet.platform.results import RunStore

    spec = spec_from_dict(SPEC)
    store = RunStore(tmp_path, spec)
    store.append({"episode_id": "e0", "success": 1})
    with store.episodes_path.open("a") as f:
        f.write("e1,libero,libero_go")  # killed mid-write
    store = RunStore(tmp_path, spec)
    assert store.finished_ids() == {"e0"}
    store.append({"episode_id": "e1", "success": 0})
    assert [r["episode_id"] for r in rows_of(store)] == ["e0", "e1"]


def rows_of(store) -> list[dict[str, str]]:
    return rows(store.root)
