"""`policy = "remote"`: evaluate a policy served elsewhere (openpi, OpenVLA-OFT, cosmos-policy, `robofleet serve`).

    [policy]
    name = "remote"
    url = "ws://127.0.0.1:8000"          # openpi: ws:// or wss://; http_act: http(s)://HOST:PORT/act
    protocol = "openpi"                  # or "http_act"
    # api_key_env = "POLICY_API_KEY"     # sent as `Authorization: Api-Key <key>`; the key never enters the spec
    # send_seed = true                   # add "seed" to each request (robofleet servers draw their noise from it)
    # timeout_s = 60                     # per request
    # image_size = 224                   # openpi only: the square side images are resized (with padding) to

Each env worker holds one connection (WebSocket or keep-alive HTTP); many workers hitting one endpoint
concurrently let a batching server batch. A dropped connection is reopened and the request sent once
more; a second failure, or an error answer, raises RemotePolicyError: the episode's row holds the cause.
Per request, Prediction.stats carries `remote_s` (round trip, s), `model_s` (the server's own inference
time when it reports one: openpi's `server_timing.infer_ms`) and `queue_s` (the rest: network, encoding,
server queue), so that rows' queue_s / model_s columns split a remote's latency as they do a replica's.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence
from urllib.parse import urlsplit

from robofleet.envs.contract import Observation
from robofleet.platform.config_fields import (
    boolean, check_keys, choice, earlier, from_linked_table, integer, number, setting, table_keys,
)
from robofleet.platform.errors import SpecError
from robofleet.policies.contract import PolicyContext, Prediction
from robofleet.policies.remote.adapters import ADAPTER_FAMILIES, ADAPTERS, PROTOCOLS, adapter_for
from robofleet.policies.remote.connections import (
    CONNECTIONS, ConnectionLost, RemotePolicyError, RemoteRefused,
)

_SCHEMES = {"openpi": ("ws", "wss"), "http_act": ("http", "https")}
_UNKNOWN = "unknown option for policy 'remote'; allowed: {allowed}"


def _url(value: Any, key: str, protocol: str) -> str:
    """A URL of `protocol`'s schemes (see _SCHEMES) with a host and, where given, a valid port."""
    schemes = _SCHEMES[protocol]
    try:
        parts = urlsplit(value) if isinstance(value, str) else None
    except ValueError:  # e.g. an unclosed "[" of an IPv6 host
        parts = None
    if parts is None or parts.scheme not in schemes or not parts.hostname:
        raise SpecError(key, f"{value!r}: protocol {protocol!r} needs a {' or '.join(schemes)} URL, "
                             f"e.g. {schemes[0]}://127.0.0.1:8000{'/act' if protocol == 'http_act' else ''}")
    try:
        parts.port
    except ValueError:
        raise SpecError(key, f"{value!r} has an invalid port") from None
    return value


def _variable_name(value: Any, key: str) -> str | None:
    """The name of an environment variable; None passes (the default: no API key)."""
    if value is not None and (not isinstance(value, str) or not value.isidentifier()):
        raise SpecError(key, f"must name an environment variable, got {value!r}")
    return value


def _within(default: float, low: float, high: float, check: Any = number) -> Any:
    """A number in [low, high] (`integer`: an int), refused with "must be a number in LOW..HIGH"."""
    return setting(default, check, minimum=low, maximum=high,
                   message=f"must be a number in {low:g}..{high:g}, got {{value!r}}")


@dataclass(frozen=True)
class RemoteOptions:
    """The `[policy]` options of `remote`, validated; fields in the order they are checked."""

    # "openpi" | "http_act"; required (parse_options gives None when left out, which is refused)
    protocol: str = setting(None, choice, allowed=PROTOCOLS, message="must be one of {allowed}, got {value!r}")
    # where the server listens, in the protocol's scheme (_SCHEMES); required, as protocol
    url: str = setting(None, _url, protocol=earlier("protocol"))
    # environment variable holding the API key (read in the env worker); None: no key
    api_key_env: str | None = setting(None, _variable_name)
    # add the request's seed as "seed" (a robofleet extension; other peers may refuse it)
    send_seed: bool = setting(False, boolean)
    timeout_s: float = _within(60.0, 0.001, 3600.0)  # per request (and per connection attempt)
    # openpi only: side of the square images sent (openpi's LIBERO example resizes to 224)
    image_size: int = _within(224, 8, 1024, integer)
    max_reply_mb: float = _within(64.0, 0.001, 4096.0)  # replies larger than this are refused


# The unknown-key text lists url first, as the module docstring does (the fields are declared protocol first:
# the url's scheme depends on it).
_LISTED = ("url", "protocol", *(key for key in table_keys(RemoteOptions) if key not in ("url", "protocol")))


def parse_options(options: Mapping[str, Any]) -> RemoteOptions:
    """RemoteOptions from `[policy]` options; SpecError names the key, the value and the fix."""
    check_keys(options, _LISTED, "policy.", _UNKNOWN)
    # url and protocol have no default: left out, they are None, which their checks refuse with the fix
    parsed = from_linked_table(RemoteOptions, {"protocol": None, "url": None, **options}, "policy.")
    if "image_size" in options and parsed.protocol != "openpi":
        raise SpecError("policy.image_size", "applies to protocol 'openpi' only (http_act sends the env's images)")
    return parsed


class RemotePolicy:
    """The Policy contract over one connection to a policy server (see the module docstring)."""

    chunk_size = None  # whatever the server returns

    def __init__(self, options: RemoteOptions, env_family: str):
        self.options = options
        resizes = "image_size" in getattr(ADAPTERS.get((env_family, options.protocol)), "__dataclass_fields__", {})
        self.adapter = adapter_for(env_family, options.protocol, **({"image_size": options.image_size} if resizes else {}))
        self._connection = None
        self.reconnects = 0

    def _api_key(self) -> str | None:
        name = self.options.api_key_env
        if name is None:
            return None
        if name not in os.environ:
            raise RemotePolicyError(f"policy.api_key_env: environment variable {name} is not set in the env worker")
        return os.environ[name]

    def _connect(self):
        return CONNECTIONS[self.options.protocol](self.options.url, api_key=self._api_key(),
                                                   timeout_s=self.options.timeout_s,
                                                   max_bytes=int(self.options.max_reply_mb * 2**20))

    def _drop(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            except Exception:  # noqa: BLE001 - the connection is already broken; a new one replaces it
                pass
            self._connection = None

    def _call(self, message: dict[str, Any]) -> tuple[Any, int]:
        """The reply and the number of attempts (1, or 2 after a dropped connection)."""
        first: ConnectionLost | None = None
        for attempt in (1, 2):
            try:
                if self._connection is None:
                    self._connection = self._connect()
                    self.reconnects += attempt == 2
                return self._connection.call(message), attempt
            except ConnectionLost as exc:
                self._drop()
                if first is not None:
                    raise RemotePolicyError(f"remote policy at {self.options.url}: the connection failed twice "
                                            f"({first}; after reconnecting: {exc})") from exc
                first = exc
            except RemoteRefused as exc:
                raise RemotePolicyError(f"remote policy at {self.options.url}: {exc}") from None
        raise AssertionError("unreachable")

    def predict(self, observations: Sequence[Observation], seeds: Sequence[int]) -> list[Prediction]:
        """observations[i] -> Prediction i, one request each, in order. actions: float32 (K, 7) as the
        server sent them; stats: remote_s, model_s, queue_s (s), attempts, and the server's timing."""
        predictions = []
        for obs, seed in zip(observations, seeds):
            message = self.adapter.request(obs, seed if self.options.send_seed else None)
            started = time.perf_counter()
            reply, attempts = self._call(message)
            remote_s = time.perf_counter() - started
            try:
                actions, future_images, value = self.adapter.prediction(reply)
            except ValueError as exc:
                raise RemotePolicyError(f"remote policy at {self.options.url}: {exc}") from None
            timing = reply.get("server_timing") if isinstance(reply, dict) else None
            timing = timing if isinstance(timing, dict) else {}
            model_s = _number(timing.get("model_ms", timing.get("infer_ms"))) / 1000
            stats = {"remote_s": remote_s, "model_s": model_s, "queue_s": max(0.0, remote_s - model_s),
                     "attempts": attempts}
            if "batch_size" in timing:
                stats["batch_size"] = int(_number(timing["batch_size"]))
            predictions.append(Prediction(actions=actions, future_images=future_images, value=value, stats=stats))
        return predictions

    def reset(self) -> None:
        """Nothing per episode: the server keeps no episode state either (openpi's `reset` is a no-op too)."""

    def close(self) -> None:
        self._drop()


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def make_remote(options: Mapping[str, Any], env_family: str) -> RemotePolicy:
    """Registry factory of "remote"."""
    if env_family not in ADAPTER_FAMILIES:
        raise SpecError("policy.name", f"remote policies have adapters for {list(ADAPTER_FAMILIES)}, "
                                       f"not env family {env_family!r}")
    return RemotePolicy(parse_options(options), env_family)


def validate_remote(context: PolicyContext, check_files: bool) -> None:
    """Options, env family and cameras always; with check_files (on the driver, before Ray starts) that
    something accepts TCP connections at the URL, so that a server that is not up fails the run at once."""
    options = parse_options(context.options)
    if (context.family, options.protocol) not in ADAPTERS:
        raise SpecError("policy.protocol", f"no adapter for env family {context.family!r} over {options.protocol!r}; "
                                           f"adapters: {', '.join(f'{f}/{p}' for f, p in ADAPTERS)}")
    if not context.render_cameras:
        raise SpecError("env.render_cameras", "a remote policy is sent the camera images: set it to true")
    if check_files:
        parts = urlsplit(options.url)
        port = parts.port or {"ws": 80, "http": 80, "wss": 443, "https": 443}[parts.scheme]
        try:
            socket.create_connection((parts.hostname, port), timeout=min(options.timeout_s, 10.0)).close()
        except OSError as exc:
            raise SpecError("policy.url", f"nothing accepts connections at {options.url} ({exc.strerror or exc}); "
                                          "start the server first (e.g. `robofleet serve SPEC`) or fix the URL") from None
