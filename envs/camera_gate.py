"""Skip rendering the camera images of env steps whose observation nobody looks at.

A policy that predicts a chunk of K actions reads the observation after the last executed action
only, yet robosuite (1.4 and 1.5) renders every camera on every step: in LIBERO that is most of a
step's cost on the CPU and, with NVIDIA EGL, GPU time taken from a policy replica on the same card.

CameraGate wraps each camera's RGB sensor of a robosuite env (again after each hard reset, which
puts fresh sensors back): while the gate is closed the sensor returns a blank image of the same
shape instead of rendering. Nothing else changes: the observables' sampling timers run as before,
so an image rendered with the gate open is taken at the same simulation substep as without the
gate, and rendering never writes the physics state, so the episode is bit-identical
(tests/test_camera_gate.py checks both).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import numpy as np


class CameraGate:
    """Open (rendering) by default; `with gate.closed():` skips the cameras' renders inside.

    env: a robosuite environment (its `_observables` hold "<camera>_image" observables).
    cameras: the camera names whose RGB images to gate; (height, width) their image size in pixels.
    """

    def __init__(self, env: Any, cameras: Sequence[str], height: int, width: int):
        self.env = env
        self._cameras = tuple(cameras)
        self._blank = np.zeros((height, width, 3), dtype=np.uint8)
        self._open = True
        self._gated: dict[str, Any] = {}  # camera -> the gated sensor installed
        self.skipped = 0  # renders skipped so far (per camera)
        self.install()

    def install(self) -> None:
        """Wrap every camera's sensor unless already wrapped. Call after each env.reset(): a hard
        reset rebuilds the simulator and puts fresh, ungated sensors back."""
        from robosuite.utils.observables import sensor

        for camera in self._cameras:
            observable = self.env._observables[f"{camera}_image"]
            if observable._sensor is self._gated.get(camera):
                continue
            render = observable._sensor

            def gated(obs_cache: dict, render: Any = render) -> np.ndarray:
                if self._open:
                    return render(obs_cache)
                self.skipped += 1
                return self._blank

            self._gated[camera] = sensor(modality=render.__modality__)(gated)
            was_open, skipped, self._open = self._open, self.skipped, False  # set_sensor probes the sensor:
            observable.set_sensor(self._gated[camera])                        # a blank, not a render
            self._open, self.skipped = was_open, skipped

    @contextmanager
    def closed(self) -> Iterator[None]:
        """No camera renders inside (the observation's images are blanks, not pictures)."""
        self._open = False
        try:
            yield
        finally:
            self._open = True
