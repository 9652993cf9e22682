"""Antialiased bilinear resize in numpy, equal bit for bit to torch's on the reference's path.

The reference evaluation resizes the 90%-area centre crop back to the model size with
torchvision `F.resize(uint8 tensor, [H, W], antialias=True)` (cosmos_utils.py,
`apply_image_transforms`). torchvision casts the uint8 image to float32, calls
`torch.nn.functional.interpolate(mode="bilinear", align_corners=False, antialias=True)` and
rounds half to even back to uint8. On the CPU, torch computes that as two separable passes
(width, then height; aten/src/ATen/native/cpu/UpSampleKernel.cpp,
`separable_upsample_generic_Nd_kernel_impl`) with PIL-style triangle-filter weights computed
in float32 and normalised per output pixel, each output a float32 multiply-add chain that the
compiler contracts into fused multiply-adds (FMA) in torch's AVX2/AVX512 kernels.

This module does the same arithmetic in numpy (env workers have no torch): weights with the
same float32/float64 conversions, and an exactly rounded float32 FMA (see `_fma32`). It is
written by hand because neither PIL (integer fixed-point weights) nor any numpy-only library
reproduces torch's float32 results. Checked equal to torch for every upscale and for downscales
by at most 2x (up to 5 filter taps); beyond that torch's sums no longer follow this order
(measured: torch 2.13 CPU, AVX2), so those are refused rather than silently different.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

_F32 = np.float32
MAX_DOWNSCALE = 2.0  # input / output size per axis up to which the result equals torch's (see module docstring)


@lru_cache(maxsize=64)
def _filter_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and weights of each output pixel along one axis.

    Returns (index (out_size, taps) int64, weight (out_size, taps) float32); taps past a pixel's
    window have weight 0 and a clamped index (adding 0 leaves torch's sum unchanged).
    Follows HelperInterpBase::_compute_indices_min_size_weights_aa: C++ float (here np.float32)
    and double (Python float) steps in the same order.
    """
    scale = _F32(in_size) / _F32(out_size)
    downscaling = scale >= 1.0
    support = _F32(1.0 * float(scale)) if downscaling else _F32(1.0)  # (interp_size 2 * 0.5) * scale
    invscale = _F32(1.0 / float(scale)) if downscaling else _F32(1.0)
    taps = int(np.ceil(support)) * 2 + 1
    index = np.zeros((out_size, taps), dtype=np.int64)
    weight = np.zeros((out_size, taps), dtype=_F32)
    for i in range(out_size):
        center = _F32(float(scale) * (i + 0.5))
        xmin = max(int(float(center - support) + 0.5), 0)
        xsize = min(max(min(int(float(center + support) + 0.5), in_size) - xmin, 0), taps)
        total = _F32(0.0)
        for j in range(xsize):
            x = abs(_F32((float(_F32(j + xmin) - center) + 0.5) * float(invscale)))
            w = _F32(1.0 - float(x)) if x < 1.0 else _F32(0.0)  # the triangle (bilinear) filter
            weight[i, j] = w
            total = _F32(total + w)
        if total != 0.0:
            weight[i, :xsize] = weight[i, :xsize] / total
        index[i] = np.minimum(xmin + np.arange(taps), in_size - 1)
    index.flags.writeable = False
    weight.flags.writeable = False
    return index, weight


def _fma32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """float32 a * b + c with a single rounding, as a hardware FMA computes it.

    a * b of two float32 values is exact in float64; the float64 sum is rounded to odd (the
    exact error from TwoSum decides the last bit) so that the final rounding to float32 is the
    correctly rounded result: no double rounding.
    """
    product = a.astype(np.float64) * b.astype(np.float64)
    addend = c.astype(np.float64)
    total = product + addend
    back = total - product
    error = (product - (total - back)) + (addend - back)
    even = (total.view(np.int64) & 1) == 0
    bump = (error != 0.0) & even
    if np.any(bump):
        total = np.where(bump, np.nextafter(total, np.where(error > 0, np.inf, -np.inf)), total)
    return total.astype(_F32)


def _resize_axis(values: np.ndarray, axis: int, size: int) -> np.ndarray:
    """One separable pass over `axis` of a float32 array (torch's basic_loop_aa_* order of sums)."""
    if values.shape[axis] == size:
        return values
    index, weight = _filter_taps(values.shape[axis], size)
    shape = [1] * values.ndim
    shape[axis] = size
    total = (np.take(values, index[:, 0], axis=axis) * weight[:, 0].reshape(shape)).astype(_F32)
    for j in range(1, index.shape[1]):
        total = _fma32(np.take(values, index[:, j], axis=axis), weight[:, j].reshape(shape), total)
    return total


def resize_bilinear_antialias(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """torchvision `F.resize(antialias=True)` (bilinear) of a uint8 image, in numpy.

    image: uint8 (H, W, C); H <= 2 height and W <= 2 width.
    Returns uint8 (height, width, C): float32 passes over width then height, rounded half to even.
    """
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"expected a uint8 (H, W, C) image, got {image.dtype} {image.shape}")
    for axis, size in ((0, height), (1, width)):
        if size < 1 or image.shape[axis] > MAX_DOWNSCALE * size:
            raise ValueError(f"resize {image.shape[:2]} -> {(height, width)}: only sizes > 0 and downscales by at most "
                             f"{MAX_DOWNSCALE}x per axis are verified equal to torch")
    if image.shape[:2] == (height, width):
        return image.copy()  # torch copies the input when no axis changes
    values = _resize_axis(image.astype(_F32), 1, width)
    values = _resize_axis(values, 0, height)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)
