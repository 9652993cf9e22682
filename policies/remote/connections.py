"""One connection to a remote policy server per protocol: send one message, get its reply.

    OpenpiConnection(url, ...)    WebSocket, msgpack-numpy binary frames; the server's metadata frame
                                  is read on connect; a text frame is the server's error (openpi-client)
    HttpActConnection(url, ...)   HTTP/1.1 keep-alive `POST /act`, json_numpy bodies

Both raise ConnectionLost when the transport failed (refused, dropped, timed out: worth reopening and
retrying) and RemoteRefused when the server answered with an error (retrying would not help).
"""
from __future__ import annotations

import http.client
import socket
from typing import Any
from urllib.parse import urlsplit

from robofleet.platform.errors import RobofleetError
from robofleet.policies.remote.wire import WireError, dumps_json, loads_json, pack_msgpack, unpack_msgpack


class RemotePolicyError(RobofleetError):
    """A remote policy could not answer: the episode's row records this with its cause."""


class ConnectionLost(RemotePolicyError):
    """The connection failed (refused, closed, timed out); a new one may succeed."""


class RemoteRefused(RemotePolicyError):
    """The server answered with an error (bad request, unauthorized, internal error)."""


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Api-Key {api_key}"} if api_key else {}


class OpenpiConnection:
    """A WebSocket to an openpi-protocol server (openpi's WebsocketPolicyServer or `robofleet serve`)."""

    def __init__(self, url: str, api_key: str | None = None, timeout_s: float = 60.0, max_bytes: int = 64 << 20):
        import websockets.exceptions
        import websockets.sync.client

        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        try:
            # Entered as a context manager (websockets >= 17 deprecates bare connect()); close() ends it.
            self._ws = websockets.sync.client.connect(url, compression=None, max_size=max_bytes, open_timeout=timeout_s,
                                                      additional_headers=_headers(api_key)).__enter__()
            self.metadata = unpack_msgpack(self._ws.recv(timeout=timeout_s), max_bytes)
        except websockets.exceptions.InvalidStatus as exc:
            raise RemoteRefused(f"{url} refused the connection: HTTP {exc.response.status_code} "
                                f"{exc.response.body.decode('utf-8', 'replace')[:300].strip()}") from None
        except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
            raise ConnectionLost(f"cannot connect to {url}: {type(exc).__name__}: {exc}") from exc

    def call(self, message: dict[str, Any]) -> Any:
        """Send one request, return the decoded reply."""
        import websockets.exceptions

        data = pack_msgpack(message)
        try:
            self._ws.send(data)
            reply = self._ws.recv(timeout=self.timeout_s)
        except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
            raise ConnectionLost(f"{type(exc).__name__}: {exc}") from exc
        if isinstance(reply, str):  # openpi: a text frame is the server's error
            raise RemoteRefused(f"the server answered with an error: {reply[:2000]}")
        try:
            return unpack_msgpack(reply, self.max_bytes)
        except WireError as exc:
            raise RemoteRefused(f"the server's reply does not decode: {exc}") from None

    def close(self) -> None:
        self._ws.close()


class HttpActConnection:
    """A keep-alive HTTP connection to a `POST /act` server (cosmos-policy's deploy.py, OpenVLA-OFT, `robofleet serve`)."""

    def __init__(self, url: str, api_key: str | None = None, timeout_s: float = 60.0, max_bytes: int = 64 << 20):
        parts = urlsplit(url)
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self.path = parts.path or "/act"
        self.max_bytes = max_bytes
        self._headers = {"Content-Type": "application/json", **_headers(api_key)}
        self._conn = cls(parts.hostname, parts.port, timeout=timeout_s)
        try:
            self._conn.connect()
        except OSError as exc:
            raise ConnectionLost(f"cannot connect to {url}: {type(exc).__name__}: {exc}") from exc
        self.metadata: dict[str, Any] = {}

    def call(self, message: dict[str, Any]) -> Any:
        body = dumps_json(message).encode()
        try:
            self._conn.request("POST", self.path, body=body, headers=self._headers)
            response = self._conn.getresponse()
            data = response.read(self.max_bytes + 1)
        except (OSError, http.client.HTTPException, socket.timeout) as exc:
            raise ConnectionLost(f"{type(exc).__name__}: {exc}") from exc
        if response.status != 200:
            raise RemoteRefused(f"the server answered HTTP {response.status}: {data.decode('utf-8', 'replace')[:2000]}")
        try:
            reply = loads_json(data, self.max_bytes)
            if isinstance(reply, str):  # the double-encoded form's reply: a JSON string of json_numpy text
                reply = loads_json(reply, self.max_bytes)
        except WireError as exc:
            raise RemoteRefused(f"the server's reply does not decode: {exc}") from None
        return reply

    def close(self) -> None:
        self._conn.close()


CONNECTIONS = {"openpi": OpenpiConnection, "http_act": HttpActConnection}
