"""One adapter per (env family, protocol): an Observation in the remote's keys, its reply as an action chunk.

Both directions live in one class so that `policy = "remote"` (client side) and `robofleet serve`
(server side) can never disagree on a key:

    request(obs, seed)      client: Observation -> the message the remote expects
    observation(message)    server: that message -> (Observation, seed or None); WireError if malformed
    reply(prediction)       server: Prediction -> the remote's reply
    prediction(reply)       client: reply -> (actions (K, 7) float32, future images, value)

LIBERO over `openpi`: the keys of openpi's LIBERO example (examples/libero/main.py): images rotated
180 degrees from the raw render and resized with padding to 224 x 224, state = eef pos (3) + eef
axis-angle (3) + gripper qpos (2), "prompt"; the reply's "actions" (K, 7).
LIBERO over `http_act`: the keys of cosmos-policy's LIBERO eval (run_libero_eval.prepare_observation
with its default flip_images=True, i.e. upright images): "primary_image", "wrist_image", "proprio"
= gripper qpos (2) + eef pos (3) + eef quaternion xyzw (4), "task_description"; the reply's "actions",
"future_image_predictions", "value_prediction" (deploy.py) and "value_predictions" (the name
run_aloha_eval.get_action_from_server reads).
Both accept one extension key, "seed" (int), that robofleet clients send with `send_seed = true` so
that a robofleet server draws the same noise as an in-process run; other peers never see it unless asked.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from PIL import Image

from robofleet.envs.contract import Observation
from robofleet.policies.contract import Prediction
from robofleet.policies.remote.wire import WireError

# LIBERO's camera names (envs/libero.py CAMERAS), as the Observation carries them.
AGENTVIEW, WRIST = "agentview", "robot0_eye_in_hand"
ACTION_DIM = 7
MAX_IMAGE_SIDE = 1024
MAX_PROMPT_CHARS = 2000
SEED_KEY = "seed"


def quat_to_axis_angle(quat: np.ndarray) -> np.ndarray:
    """(4,) xyzw quaternion -> (3,) axis * angle in radians, as robosuite's quat2axisangle (openpi's copy)."""
    quat = np.asarray(quat, dtype=np.float64).copy()
    quat[3] = min(max(quat[3], -1.0), 1.0)
    den = math.sqrt(1.0 - quat[3] * quat[3])
    if math.isclose(den, 0.0):
        return np.zeros(3)
    return quat[:3] * 2.0 * math.acos(quat[3]) / den


def axis_angle_to_quat(axis_angle: np.ndarray) -> np.ndarray:
    """(3,) axis * angle -> (4,) xyzw quaternion; the inverse of quat_to_axis_angle."""
    v = np.asarray(axis_angle, dtype=np.float64)
    angle = float(np.linalg.norm(v))
    if math.isclose(angle, 0.0):
        return np.array([0.0, 0.0, 0.0, 1.0])
    return np.concatenate([v / angle * math.sin(angle / 2), [math.cos(angle / 2)]])


def resize_with_pad(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W, 3) -> (size, size, 3), aspect kept, zero padded: openpi_client.image_tools.resize_with_pad
    (bilinear PIL), the resize of openpi's LIBERO example. A no-op when already that size."""
    if image.shape[:2] == (size, size):
        return image
    pil = Image.fromarray(image)
    ratio = max(pil.width / size, pil.height / size)
    resized = pil.resize((int(pil.width / ratio), int(pil.height / ratio)), resample=Image.BILINEAR)
    canvas = Image.new(resized.mode, (size, size), 0)
    canvas.paste(resized, (max(0, int((size - resized.width) / 2)), max(0, int((size - resized.height) / 2))))
    return np.asarray(canvas)


def _check_keys(message: Any, required: tuple[str, ...], optional: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(message, dict):
        raise WireError(f"the request must be a map of {', '.join(required)}; got {type(message).__name__}")
    missing = [k for k in required if k not in message]
    unknown = [k for k in message if k not in required and k not in optional]
    if missing or unknown:
        raise WireError(f"missing keys {missing} / unknown keys {unknown!r}; "
                        f"expected {list(required)} (optional {list(optional)})")
    return message


def _image(value: Any, key: str) -> np.ndarray:
    """uint8 (H, W, 3) from an array or nested lists (the double-encoded form carries lists)."""
    if not isinstance(value, np.ndarray):
        try:
            value = np.asarray(value)
        except (ValueError, TypeError) as exc:
            raise WireError(f"{key}: not an array ({exc})") from None
        if value.dtype.kind in "iu" and value.size and (value.min() < 0 or value.max() > 255):
            raise WireError(f"{key}: pixel values must be in 0..255")
        if value.dtype.kind in "iu":
            value = value.astype(np.uint8)
    if value.dtype != np.uint8 or value.ndim != 3 or value.shape[2] != 3:
        raise WireError(f"{key}: expected a uint8 (H, W, 3) image, got {value.dtype} {list(value.shape)}")
    if not (8 <= value.shape[0] <= MAX_IMAGE_SIDE and 8 <= value.shape[1] <= MAX_IMAGE_SIDE):
        raise WireError(f"{key}: image sides must be 8..{MAX_IMAGE_SIDE} pixels, got {list(value.shape[:2])}")
    return value


def _vector(value: Any, key: str, size: int) -> np.ndarray:
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise WireError(f"{key}: not an array ({exc})") from None
    if array.dtype.kind not in "iuf" or array.shape != (size,) or not np.all(np.isfinite(array)):
        raise WireError(f"{key}: expected {size} finite numbers, got {array.dtype} {list(array.shape)}")
    return array.astype(np.float32)


def _prompt(value: Any, key: str) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str) or len(value) > MAX_PROMPT_CHARS:
        raise WireError(f"{key}: expected a string of at most {MAX_PROMPT_CHARS} characters")
    return value


def _seed(message: Mapping[str, Any]) -> int | None:
    seed = message.get(SEED_KEY)
    if seed is None:
        return None
    if isinstance(seed, np.integer):
        seed = int(seed)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise WireError(f"{SEED_KEY}: expected an integer in 0..2**63-1, got {seed!r}")
    return seed


def _images_of(obs: Observation) -> tuple[np.ndarray, np.ndarray]:
    if AGENTVIEW not in obs.images or WRIST not in obs.images:
        raise ValueError(f"the remote policy needs LIBERO's {AGENTVIEW!r} and {WRIST!r} images; the observation "
                         f"has {sorted(obs.images)} (set env.render_cameras = true)")
    return obs.images[AGENTVIEW], obs.images[WRIST]


def actions_of(reply: Any) -> np.ndarray:
    """The reply's "actions" as float32 (K, 7); ValueError naming the problem."""
    if not isinstance(reply, dict) or "actions" not in reply:
        raise ValueError(f"the remote's reply has no 'actions' (got {type(reply).__name__} "
                         f"{sorted(reply) if isinstance(reply, dict) else ''})")
    actions = np.asarray(reply["actions"], dtype=np.float32)
    if actions.ndim == 1:
        actions = actions[None, :]
    if actions.ndim != 2 or actions.shape[0] == 0 or actions.shape[1] != ACTION_DIM or not np.all(np.isfinite(actions)):
        raise ValueError(f"the remote's actions have shape {list(actions.shape)}; expected finite (K >= 1, {ACTION_DIM})")
    return actions


@dataclass(frozen=True)
class LiberoOpenpi:
    """LIBERO <-> openpi's LIBERO example keys (see the module docstring).

    image_size: side of the square images sent (openpi's LIBERO example: 224).
    """

    image_size: int = 224
    protocol = "openpi"
    family = "libero"
    keys = ("observation/image", "observation/wrist_image", "observation/state", "prompt")

    def request(self, obs: Observation, seed: int | None = None) -> dict[str, Any]:
        agentview, wrist = _images_of(obs)
        proprio = np.asarray(obs.proprio, dtype=np.float64)  # gripper qpos (2), eef pos (3), eef quat xyzw (4)
        message = {
            # upright[:, ::-1] is the raw render rotated 180 degrees (raw[::-1, ::-1]), as openpi trains on.
            "observation/image": resize_with_pad(np.ascontiguousarray(agentview[:, ::-1]), self.image_size),
            "observation/wrist_image": resize_with_pad(np.ascontiguousarray(wrist[:, ::-1]), self.image_size),
            "observation/state": np.concatenate([proprio[2:5], quat_to_axis_angle(proprio[5:9]), proprio[0:2]]),
            "prompt": str(obs.instruction),
        }
        if seed is not None:
            message[SEED_KEY] = int(seed)
        return message

    def observation(self, message: Any) -> tuple[Observation, int | None]:
        message = _check_keys(message, self.keys, (SEED_KEY,))
        state = _vector(message["observation/state"], "observation/state", 8).astype(np.float64)
        proprio = np.concatenate([state[6:8], state[0:3], axis_angle_to_quat(state[3:6])]).astype(np.float32)
        images = {AGENTVIEW: np.ascontiguousarray(_image(message["observation/image"], "observation/image")[:, ::-1]),
                  WRIST: np.ascontiguousarray(_image(message["observation/wrist_image"], "observation/wrist_image")[:, ::-1])}
        return Observation(images=images, proprio=proprio, instruction=_prompt(message["prompt"], "prompt")), _seed(message)

    def reply(self, prediction: Prediction) -> dict[str, Any]:
        return {"actions": np.asarray(prediction.actions, dtype=np.float32)}

    def prediction(self, reply: Any) -> tuple[np.ndarray, dict[str, np.ndarray] | None, float | None]:
        return actions_of(reply), None, None


@dataclass(frozen=True)
class LiberoHttpAct:
    """LIBERO <-> the reference's `POST /act` keys (see the module docstring)."""

    protocol = "http_act"
    family = "libero"
    keys = ("primary_image", "wrist_image", "proprio", "task_description")
    # The reference's client always sends return_all_query_results (run_aloha_eval.get_action_from_server).
    optional = (SEED_KEY, "return_all_query_results")
    images = {"primary_image": AGENTVIEW, "wrist_image": WRIST}

    def request(self, obs: Observation, seed: int | None = None) -> dict[str, Any]:
        agentview, wrist = _images_of(obs)
        message = {"primary_image": np.ascontiguousarray(agentview), "wrist_image": np.ascontiguousarray(wrist),
                   "proprio": np.asarray(obs.proprio, dtype=np.float32), "task_description": str(obs.instruction)}
        if seed is not None:
            message[SEED_KEY] = int(seed)
        return message

    def observation(self, message: Any) -> tuple[Observation, int | None]:
        message = _check_keys(message, self.keys, self.optional)
        if message.get("return_all_query_results") not in (None, False):
            raise WireError("return_all_query_results = true is not served (one chunk per request)")
        images = {camera: _image(message[key], key) for key, camera in self.images.items()}
        obs = Observation(images=images, proprio=_vector(message["proprio"], "proprio", 9),
                          instruction=_prompt(message["task_description"], "task_description"))
        return obs, _seed(message)

    def reply(self, prediction: Prediction) -> dict[str, Any]:
        futures = None
        if prediction.future_images:
            by_camera = {camera: key for key, camera in self.images.items()}
            futures = {by_camera.get(c, c): np.asarray(img) for c, img in prediction.future_images.items()}
        value = None if prediction.value is None else float(prediction.value)
        return {"actions": np.asarray(prediction.actions, dtype=np.float32), "future_image_predictions": futures,
                "value_prediction": value, "value_predictions": value}

    def prediction(self, reply: Any) -> tuple[np.ndarray, dict[str, np.ndarray] | None, float | None]:
        actions = actions_of(reply)
        futures = reply.get("future_image_predictions")
        images = None
        if isinstance(futures, dict):
            images = {self.images.get(k, k): np.asarray(v, dtype=np.uint8) for k, v in futures.items()}
        value = reply.get("value_prediction", reply.get("value_predictions"))
        return actions, images, None if value is None else float(value)


ADAPTERS: dict[tuple[str, str], type] = {("libero", "openpi"): LiberoOpenpi, ("libero", "http_act"): LiberoHttpAct}
PROTOCOLS = ("openpi", "http_act")


def adapter_for(family: str, protocol: str, **options: Any) -> LiberoOpenpi | LiberoHttpAct:
    """The adapter of (env family, protocol); KeyError when there is none (validators name the fix)."""
    return ADAPTERS[(family, protocol)](**options)
