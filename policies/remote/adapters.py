"""One adapter per (env family, protocol): an Observation in the remote's keys, its reply as an action chunk.

Both directions live in one class so that `policy = "remote"` (client side) and `robofleet serve`
(server side) can never disagree on a key:

    request(obs, seed)      client: Observation -> the message the remote expects
    observation(message)    server: that message -> (Observation, seed or None); WireError if malformed
    wants_all(message)      server: whether the reply should carry every proposal (return_all_query_results)
    reply(answer)           server: Answer (the chosen Prediction, its value, the plan) -> the remote's reply
    prediction(reply)       client: reply -> (actions (K, d_act) float32, future images, value)

LIBERO over `openpi`: the keys of openpi's LIBERO example (examples/libero/main.py): images rotated
180 degrees from the raw render and resized with padding to 224 x 224, state = eef pos (3) + eef
axis-angle (3) + gripper qpos (2), "prompt"; the reply's "actions" (K, 7).
LIBERO over `http_act`: the keys of cosmos-policy's LIBERO eval (run_libero_eval.prepare_observation
with its default flip_images=True, i.e. upright images): "primary_image", "wrist_image", "proprio"
= gripper qpos (2) + eef pos (3) + eef quaternion xyzw (4), "task_description".
ALOHA over `http_act`: the keys of cosmos-policy's ALOHA client (aloha/run_aloha_eval.py
prepare_observation + `observation["task_description"]`, read by aloha/deploy.py get_server_action):
"primary_image" (cam_high), "left_wrist_image", "right_wrist_image" (uint8 224 x 224 x 3 in the
reference), "proprio" = qpos (14), "task_description", "return_all_query_results".
ALOHA over `openpi`: the keys of openpi's ALOHA example (examples/aloha_real/env.py, policies/aloha_policy.py):
"state" (14,), "images" {cam_high, cam_left_wrist, cam_right_wrist (cam_low accepted, unused)} as
uint8 (3, H, W) (H, W, 3 accepted too), "prompt"; the reply's "actions" (K, 14).

`http_act` replies as deploy.py does: "actions", "future_image_predictions" (the reference's keys:
future_image = primary, future_wrist_image = (left) wrist, future_wrist_image2 = right wrist; None
unless the policy returns future images), "value_prediction" and, under the same value,
"value_predictions" (the name run_aloha_eval.get_action_from_server reads); with
"return_all_query_results": true also "all_actions", "all_future_image_predictions",
"all_value_predictions" (one per proposal; deploy.py's *_by_depth lists are not sent).
When a planner chose the chunk, the value is the chosen proposal's planning score (deploy.py's best
`value_prediction`) and both protocols add robofleet's "plan" key (n, chosen, scores, seeds, ...).
Both accept one extension key, "seed" (int), that robofleet clients send with `send_seed = true` so
that a robofleet server draws the same noise as an in-process run; other peers never see it unless asked.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
from PIL import Image

from robofleet.envs.contract import CAMERA_KEYS, Observation
from robofleet.policies.contract import Prediction
from robofleet.policies.remote.wire import WireError

# The Observation's image keys by camera role (envs/contract.py): LIBERO's, and ALOHA's (the names of the
# reference deploy's obs.observation["images"]).
AGENTVIEW, WRIST = CAMERA_KEYS["libero"]["primary"], CAMERA_KEYS["libero"]["wrist"]
CAM_HIGH, CAM_LEFT_WRIST, CAM_RIGHT_WRIST = (CAMERA_KEYS["aloha"][role] for role in ("top", "left_wrist", "right_wrist"))
ACTION_DIM = 7  # LIBERO
ALOHA_DIM = 14  # ALOHA: qpos and actions, 2 x (6 joints + gripper)
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


def mirror(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) flipped left-right, contiguous (PIL's C loop: ~3x faster than numpy's strided copy)."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).transpose(Image.Transpose.FLIP_LEFT_RIGHT))


def _image(value: Any, key: str, channels_first: bool = False) -> np.ndarray:
    """uint8 (H, W, 3) from an array or nested lists (the double-encoded form carries lists).
    channels_first: a (3, H, W) array is accepted too (openpi's ALOHA convention), returned as an (H, W, 3) view."""
    if not isinstance(value, np.ndarray):
        try:
            value = np.asarray(value)
        except (ValueError, TypeError) as exc:
            raise WireError(f"{key}: not an array ({exc})") from None
        if value.dtype.kind in "iu" and value.size and (value.min() < 0 or value.max() > 255):
            raise WireError(f"{key}: pixel values must be in 0..255")
        if value.dtype.kind in "iu":
            value = value.astype(np.uint8)
    if channels_first and value.ndim == 3 and value.shape[0] == 3 and value.shape[2] != 3:
        value = value.transpose(1, 2, 0)
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


def actions_of(reply: Any, action_dim: int = ACTION_DIM) -> np.ndarray:
    """The reply's "actions" as float32 (K, action_dim); ValueError naming the problem."""
    if not isinstance(reply, dict) or "actions" not in reply:
        raise ValueError(f"the remote's reply has no 'actions' (got {type(reply).__name__} "
                         f"{sorted(reply) if isinstance(reply, dict) else ''})")
    actions = np.asarray(reply["actions"], dtype=np.float32)
    if actions.ndim == 1:
        actions = actions[None, :]
    if actions.ndim != 2 or actions.shape[0] == 0 or actions.shape[1] != action_dim or not np.all(np.isfinite(actions)):
        raise ValueError(f"the remote's actions have shape {list(actions.shape)}; expected finite (K >= 1, {action_dim})")
    return actions


@dataclass(frozen=True)
class Answer:
    """What a server answers one request with; each adapter writes it in its protocol's reply.

    prediction: the chunk to execute (under a planner, the chosen proposal's; actions (K, d_act) float32).
    value: the value reported with it: the planner's score of the chosen proposal, else the policy's
        own V in [0, 1], or None.
    plan: JSON-able facts of the planner's choice (best_of_n: n, chosen, scores, seeds, ...); None
        when the policy answered alone.
    proposals, proposal_values: every proposal and its value, in proposal order (sent only when the
        request asks for return_all_query_results).
    """

    prediction: Prediction
    value: float | None = None
    plan: Mapping[str, Any] | None = None
    proposals: Sequence[Prediction] = ()
    proposal_values: Sequence[float | None] = ()


def _value(value: Any) -> float | None:
    return None if value is None else float(value)


class _Openpi:
    """What every openpi adapter answers alike: never the `all_*` results, replies as free-form maps with
    "actions" and, under a planner, "plan" (with the chosen "value"); the reply's chunk is `actions`."""

    action_dim: ClassVar[int]

    def wants_all(self, message: Any) -> bool:
        return False

    def reply(self, answer: Answer) -> dict[str, Any]:
        reply: dict[str, Any] = {"actions": np.asarray(answer.prediction.actions, dtype=np.float32)}
        if answer.plan is not None:
            reply["plan"] = {**answer.plan, "value": _value(answer.value)}
        return reply

    def prediction(self, reply: Any) -> tuple[np.ndarray, dict[str, np.ndarray] | None, float | None]:
        return actions_of(reply, self.action_dim), None, None


@dataclass(frozen=True)
class LiberoOpenpi(_Openpi):
    """LIBERO <-> openpi's LIBERO example keys (see the module docstring).

    image_size: side of the square images sent (openpi's LIBERO example: 224).
    """

    image_size: int = 224
    protocol: ClassVar[str] = "openpi"
    family: ClassVar[str] = "libero"
    keys: ClassVar[tuple[str, ...]] = ("observation/image", "observation/wrist_image", "observation/state", "prompt")
    action_dim: ClassVar[int] = ACTION_DIM

    def request(self, obs: Observation, seed: int | None = None) -> dict[str, Any]:
        agentview, wrist = _images_of(obs)
        proprio = np.asarray(obs.proprio, dtype=np.float64)  # gripper qpos (2), eef pos (3), eef quat xyzw (4)
        message = {
            # mirror(upright) is the raw render rotated 180 degrees (raw[::-1, ::-1]), as openpi trains on.
            "observation/image": resize_with_pad(mirror(agentview), self.image_size),
            "observation/wrist_image": resize_with_pad(mirror(wrist), self.image_size),
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
        # Upright again as views of the frame's buffer: no copy here (a policy that reads the pixels copies once).
        images = {AGENTVIEW: _image(message["observation/image"], "observation/image")[:, ::-1],
                  WRIST: _image(message["observation/wrist_image"], "observation/wrist_image")[:, ::-1]}
        return Observation(images=images, proprio=proprio, instruction=_prompt(message["prompt"], "prompt")), _seed(message)


@dataclass(frozen=True)
class AlohaOpenpi(_Openpi):
    """ALOHA <-> openpi's ALOHA example keys (see the module docstring)."""

    protocol: ClassVar[str] = "openpi"
    family: ClassVar[str] = "aloha"
    keys: ClassVar[tuple[str, ...]] = ("state", "images", "prompt")
    cameras: ClassVar[tuple[str, ...]] = (CAM_HIGH, CAM_LEFT_WRIST, CAM_RIGHT_WRIST)
    unused_cameras: ClassVar[tuple[str, ...]] = ("cam_low",)  # openpi's fourth camera: Cosmos has no slot for it
    action_dim: ClassVar[int] = ALOHA_DIM

    def request(self, obs: Observation, seed: int | None = None) -> dict[str, Any]:
        missing = [c for c in self.cameras if c not in obs.images]
        if missing:
            raise ValueError(f"ALOHA requests need cameras {list(self.cameras)}; the observation lacks {missing}")
        message = {"state": np.asarray(obs.proprio, dtype=np.float32),
                   "images": {c: np.ascontiguousarray(np.asarray(obs.images[c]).transpose(2, 0, 1)) for c in self.cameras},
                   "prompt": str(obs.instruction)}
        if seed is not None:
            message[SEED_KEY] = int(seed)
        return message

    def observation(self, message: Any) -> tuple[Observation, int | None]:
        message = _check_keys(message, self.keys, (SEED_KEY,))
        given = _check_keys(message["images"], self.cameras, self.unused_cameras)
        images = {c: _image(given[c], f"images/{c}", channels_first=True) for c in self.cameras}
        obs = Observation(images=images, proprio=_vector(message["state"], "state", ALOHA_DIM),
                          instruction=_prompt(message["prompt"], "prompt"))
        return obs, _seed(message)


class _HttpAct:
    """`POST /act` as cosmos-policy's deploy.py speaks it; subclasses name the family's keys.

    images: request key -> Observation camera key. futures: camera key -> the reply's future-image key.
    """

    protocol: ClassVar[str] = "http_act"
    family: ClassVar[str]
    keys: ClassVar[tuple[str, ...]]
    images: ClassVar[Mapping[str, str]]
    futures: ClassVar[Mapping[str, str]]
    proprio_dim: ClassVar[int]
    action_dim: ClassVar[int]
    # The reference's client always sends return_all_query_results (run_aloha_eval.get_action_from_server).
    optional: ClassVar[tuple[str, ...]] = (SEED_KEY, "return_all_query_results")

    def request(self, obs: Observation, seed: int | None = None) -> dict[str, Any]:
        missing = [c for c in self.images.values() if c not in obs.images]
        if missing:
            raise ValueError(f"the remote policy needs {self.family} cameras {list(self.images.values())}; the "
                             f"observation has {sorted(obs.images)} (set env.render_cameras = true)")
        message: dict[str, Any] = {key: np.ascontiguousarray(obs.images[camera]) for key, camera in self.images.items()}
        message["proprio"] = np.asarray(obs.proprio, dtype=np.float32)
        message["task_description"] = str(obs.instruction)
        if seed is not None:
            message[SEED_KEY] = int(seed)
        return message

    def observation(self, message: Any) -> tuple[Observation, int | None]:
        message = _check_keys(message, self.keys, self.optional)
        self.wants_all(message)
        images = {camera: _image(message[key], key) for key, camera in self.images.items()}
        obs = Observation(images=images, proprio=_vector(message["proprio"], "proprio", self.proprio_dim),
                          instruction=_prompt(message["task_description"], "task_description"))
        return obs, _seed(message)

    def wants_all(self, message: Any) -> bool:
        flag = message.get("return_all_query_results", False) if isinstance(message, dict) else False
        if not isinstance(flag, (bool, np.bool_)):
            raise WireError(f"return_all_query_results: expected true or false, got {flag!r}")
        return bool(flag)

    def _futures(self, prediction: Prediction) -> dict[str, np.ndarray] | None:
        if not prediction.future_images:
            return None
        return {self.futures.get(c, c): np.asarray(img) for c, img in prediction.future_images.items()}

    def reply(self, answer: Answer) -> dict[str, Any]:
        value = _value(answer.value)
        reply: dict[str, Any] = {"actions": np.asarray(answer.prediction.actions, dtype=np.float32),
                                 "future_image_predictions": self._futures(answer.prediction),
                                 "value_prediction": value, "value_predictions": value}
        if answer.proposals:
            reply["all_actions"] = [np.asarray(p.actions, dtype=np.float32) for p in answer.proposals]
            reply["all_future_image_predictions"] = [self._futures(p) for p in answer.proposals]
            reply["all_value_predictions"] = [_value(v) for v in answer.proposal_values]
        if answer.plan is not None:
            reply["plan"] = dict(answer.plan)
        return reply

    def prediction(self, reply: Any) -> tuple[np.ndarray, dict[str, np.ndarray] | None, float | None]:
        actions = actions_of(reply, self.action_dim)
        futures = reply.get("future_image_predictions")
        images = None
        if isinstance(futures, dict):
            cameras = {key: camera for camera, key in self.futures.items()}
            images = {cameras.get(k, self.images.get(k, k)): np.asarray(v, dtype=np.uint8) for k, v in futures.items()}
        value = reply.get("value_prediction", reply.get("value_predictions"))
        return actions, images, _value(value)


@dataclass(frozen=True)
class LiberoHttpAct(_HttpAct):
    """LIBERO <-> the reference's `POST /act` keys (see the module docstring)."""

    family: ClassVar[str] = "libero"
    keys: ClassVar[tuple[str, ...]] = ("primary_image", "wrist_image", "proprio", "task_description")
    images: ClassVar[Mapping[str, str]] = {"primary_image": AGENTVIEW, "wrist_image": WRIST}
    futures: ClassVar[Mapping[str, str]] = {AGENTVIEW: "future_image", WRIST: "future_wrist_image"}
    proprio_dim: ClassVar[int] = 9
    action_dim: ClassVar[int] = ACTION_DIM


@dataclass(frozen=True)
class AlohaHttpAct(_HttpAct):
    """ALOHA <-> cosmos-policy's ALOHA `POST /act` keys (aloha/deploy.py; see the module docstring)."""

    family: ClassVar[str] = "aloha"
    keys: ClassVar[tuple[str, ...]] = ("primary_image", "left_wrist_image", "right_wrist_image", "proprio",
                                       "task_description")
    images: ClassVar[Mapping[str, str]] = {"primary_image": CAM_HIGH, "left_wrist_image": CAM_LEFT_WRIST,
                                           "right_wrist_image": CAM_RIGHT_WRIST}
    futures: ClassVar[Mapping[str, str]] = {CAM_HIGH: "future_image", CAM_LEFT_WRIST: "future_wrist_image",
                                            CAM_RIGHT_WRIST: "future_wrist_image2"}
    proprio_dim: ClassVar[int] = ALOHA_DIM
    action_dim: ClassVar[int] = ALOHA_DIM


Adapter = LiberoOpenpi | LiberoHttpAct | AlohaOpenpi | AlohaHttpAct
ADAPTERS: dict[tuple[str, str], type] = {("libero", "openpi"): LiberoOpenpi, ("libero", "http_act"): LiberoHttpAct,
                                         ("aloha", "openpi"): AlohaOpenpi, ("aloha", "http_act"): AlohaHttpAct}
PROTOCOLS = ("openpi", "http_act")
SERVED_ONLY_FAMILIES = ("aloha",)  # served to real robots; robofleet has no simulator of theirs
ADAPTER_FAMILIES: tuple[str, ...] = tuple(sorted({family for family, _ in ADAPTERS}))  # env families with adapters


def adapter_for(family: str, protocol: str, **options: Any) -> Adapter:
    """The adapter of (env family, protocol); KeyError when there is none (validators name the fix)."""
    return ADAPTERS[(family, protocol)](**options)
