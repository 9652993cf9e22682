"""The two wire encodings of numpy arrays that robot-serving peers speak, decoded defensively.

- msgpack-numpy, as `openpi-client` writes it (openpi_client/msgpack_numpy.py): an array is the map
  {b"__ndarray__": True, b"data": <raw bytes>, b"dtype": "<f4", b"shape": [..]}, a numpy scalar
  {b"__npgeneric__": True, b"data": <item>, b"dtype": "<f4"}.
- json_numpy, as the `json-numpy` package writes it (OpenVLA-OFT's and cosmos-policy's `POST /act`):
  {"__numpy__": <base64 of the raw bytes>, "dtype": "<f4", "shape": [..]}; shape [] is a scalar.

Written here rather than imported: openpi-client pins numpy<2 and both decoders build whatever dtype
the peer names; these accept only bool, integer and float dtypes, check shape against the byte count
and never unpickle. Anything else raises WireError, whose message is safe to send back to a client.
"""
from __future__ import annotations

import base64
import json
from typing import Any

import msgpack
import numpy as np

MAX_NDIM = 8
_KINDS = frozenset("biuf")  # bool, signed / unsigned integers, floats: no objects, records or strings


class WireError(ValueError):
    """A frame or body that does not decode into what the protocol allows (the message names why)."""


def _dtype(name: Any) -> np.dtype:
    if isinstance(name, bytes):
        name = name.decode("ascii", "replace")
    if not isinstance(name, str) or len(name) > 16:
        raise WireError(f"array dtype must be a short string such as '<f4', got {name!r}")
    try:
        dtype = np.dtype(name)
    except TypeError as exc:
        raise WireError(f"unknown array dtype {name!r}") from exc
    if dtype.kind not in _KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise WireError(f"array dtype {name!r} is not allowed (bool, integer and float arrays only)")
    return dtype


def _shape(shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, (list, tuple)) or len(shape) > MAX_NDIM or not all(
            isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**31 for n in shape):
        raise WireError(f"array shape must be a list of at most {MAX_NDIM} non-negative integers, got {shape!r}")
    return tuple(shape)


def _array(data: Any, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    if not isinstance(data, (bytes, bytearray)):
        raise WireError("array data must be bytes")
    if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize != len(data):
        raise WireError(f"array of shape {list(shape)} and dtype {dtype.str} needs "
                        f"{int(np.prod(shape, dtype=np.int64)) * dtype.itemsize} bytes, got {len(data)}")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


# --- msgpack-numpy (openpi) ----------------------------------------------------------------------

def _pack_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in _KINDS:
            raise WireError(f"cannot send arrays of dtype {obj.dtype}")
        return {b"__ndarray__": True, b"data": np.ascontiguousarray(obj).tobytes(), b"dtype": obj.dtype.str,
                b"shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot send {type(obj).__name__}")


def _unpack_hook(obj: dict) -> Any:
    if b"__ndarray__" in obj:
        return _array(obj.get(b"data"), _dtype(obj.get(b"dtype")), _shape(obj.get(b"shape")))
    if b"__npgeneric__" in obj:
        dtype = _dtype(obj.get(b"dtype"))
        value = obj.get(b"data")
        if not isinstance(value, (bool, int, float)):
            raise WireError("numpy scalar data must be a number")
        try:
            return dtype.type(value)
        except (OverflowError, ValueError) as exc:
            raise WireError(f"numpy scalar {value!r} does not fit dtype {dtype.str}") from exc
    return obj


def pack_msgpack(message: Any) -> bytes:
    """A message (dicts, lists, str, numbers, numpy arrays and scalars) as openpi-client's msgpack bytes."""
    return msgpack.packb(message, default=_pack_default)


def unpack_msgpack(data: bytes, max_bytes: int) -> Any:
    """openpi-client's msgpack bytes -> message; WireError for anything malformed or too large."""
    if len(data) > max_bytes:
        raise WireError(f"message of {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        return msgpack.unpackb(data, object_hook=_unpack_hook)
    except WireError:
        raise
    except Exception as exc:  # noqa: BLE001 - msgpack's many error types: all mean a malformed frame
        raise WireError(f"not a msgpack message ({type(exc).__name__}: {exc})") from None


# --- json_numpy (POST /act) ----------------------------------------------------------------------

def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.ndarray, np.generic)):
        if obj.dtype.kind not in _KINDS:
            raise TypeError(f"cannot send arrays of dtype {obj.dtype}")
        return {"__numpy__": base64.b64encode(np.ascontiguousarray(obj).tobytes()).decode("ascii"),
                "dtype": obj.dtype.str, "shape": list(np.shape(obj))}
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _json_hook(obj: dict) -> Any:
    if "__numpy__" not in obj:
        return obj
    encoded = obj["__numpy__"]
    if not isinstance(encoded, str):
        raise WireError("__numpy__ must be a base64 string")
    try:
        data = base64.b64decode(encoded, validate=True)
    except ValueError as exc:
        raise WireError("__numpy__ is not valid base64") from exc
    shape = _shape(obj.get("shape"))
    array = _array(data, _dtype(obj.get("dtype")), shape)
    return array if shape else array[()]


def dumps_json(message: Any) -> str:
    """A message as json_numpy text (what `json_numpy.dumps` writes)."""
    return json.dumps(message, default=_json_default)


def loads_json(text: str | bytes, max_bytes: int) -> Any:
    """json_numpy text -> message; WireError for anything malformed or too large (nesting included)."""
    if len(text) > max_bytes:
        raise WireError(f"body of {len(text)} bytes exceeds the limit of {max_bytes}")
    try:
        return json.loads(text, object_hook=_json_hook)
    except WireError:
        raise
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise WireError(f"not JSON ({type(exc).__name__}: {exc})") from None
