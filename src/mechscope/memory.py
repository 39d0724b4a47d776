"""Will a cache fit? ``run_with_cache``'s memory estimated from the point shapes, and checked before the forward.

A full cache of GPT-2-small at 8 × 128 tokens is about 1 GB; of a 7B model at 32 × 2048 tokens, hundreds of GB.
Running out of memory half-way through a forward kills a notebook's kernel or leaves a GPU fragmented, so
``run_with_cache`` refuses up front, with the numbers and the fixes, when the estimate does not fit in what is free
on the device the cache would live on. The estimate is exact for the points' own tensors (shapes are known from
the table); it does not count the forward's own temporaries, hence the headroom.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch

from .errors import MechscopeError
from .hooks import HookPoint
from .points import B, K, P, numel

HEADROOM = 0.9
"""A cache may use at most this fraction of the free memory: the forward itself needs the rest."""


class CacheMemoryError(MechscopeError, MemoryError):
    """A requested cache would not fit in the memory free on its device."""


def itemsize(point: HookPoint, model_dtype: torch.dtype) -> int:
    """Bytes per element of a point's activation: the model's dtype, or float32 for points computed in float32."""
    dtype = point.site.dtype
    return (torch.promote_types(dtype, model_dtype) if dtype is not None else model_dtype).itemsize


class Footprint(NamedTuple):
    """A point's size as a function of the call: ``bytes_per * batch^batch_axes * pos^pos_axes * k_pos^k_axes``,
    precomputed once per point so the check before every ``run_with_cache`` stays a few microseconds a point."""

    bytes_per: int
    batch_axes: int
    pos_axes: int
    k_axes: int
    has_grad: bool

    def nbytes(self, batch: int, pos: int, k_pos: int, incl_bwd: bool = False) -> int:
        n = self.bytes_per * batch ** self.batch_axes * pos ** self.pos_axes * k_pos ** self.k_axes
        return 2 * n if incl_bwd and self.has_grad else n


def footprint(point: HookPoint, model_dtype: torch.dtype) -> Footprint | None:
    """None when the shape has an axis the table cannot size (a user-added point's ``d_sae``)."""
    fixed = 1
    for s in point.shape:
        if s not in (B, P, K):
            if not isinstance(s, int):
                return None
            fixed *= s
    return Footprint(fixed * itemsize(point, model_dtype), point.shape.count(B), point.shape.count(P),
                     point.shape.count(K), point.site.in_graph)


def point_bytes(point: HookPoint, batch: int, pos: int, model_dtype: torch.dtype, k_pos: int | None = None) -> int | None:
    """Bytes of one point's activation for ``batch`` sequences of ``pos`` new tokens (``k_pos`` keys, with any KV
    cache; default ``pos``); None when its shape has an axis the table cannot size (a user-added point's ``d_sae``)."""
    n = numel(point.shape, batch, pos, k_pos)
    return None if n is None else n * itemsize(point, model_dtype)


def _mem_available() -> int | None:
    try:  # one read(2) of /proc/meminfo: ~10 µs, where iterating it as a text file takes ~70
        fd = os.open("/proc/meminfo", os.O_RDONLY)
        try:
            text = os.read(fd, 8192)
        finally:
            os.close(fd)
    except OSError:
        return None
    at = text.find(b"MemAvailable:")
    return None if at < 0 else int(text[at + 13:text.index(b"kB", at)]) * 1024


def free_bytes(device: torch.device) -> int | None:
    """Memory free for new tensors on ``device``; None where it cannot be told (meta, mps, ...): then no check.

    CUDA: the driver's free memory plus what PyTorch's caching allocator holds unused. CPU: ``MemAvailable`` from
    ``/proc/meminfo`` (what Linux can hand out without swapping), else the free physical pages."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type == "cpu":
        available = _mem_available()
        if available is not None:
            return available
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    return None


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def check(needed: dict[torch.device, int], *, n_points: int, batch: int, pos: int, moved: bool) -> None:
    """Raise ``CacheMemoryError`` if the bytes ``needed`` on some device exceed ``HEADROOM`` of what is free there.

    ``moved``: the cache was already sent elsewhere with ``device=``, so that fix is not offered again."""
    for device, nbytes in needed.items():
        free = free_bytes(device)
        if free is None or nbytes <= HEADROOM * free:
            continue
        fixes = ["cache fewer points (names_filter=...)", "use a smaller batch or shorter prompts"]
        if device.type != "cpu" and not moved:
            fixes.append('keep the cache in CPU memory (device="cpu")')
        raise CacheMemoryError(
            f"caching {n_points} hook points for {batch} × {pos} tokens needs about {format_bytes(nbytes)} on "
            f"{device}, but only {format_bytes(free)} is free there; {', '.join(fixes[:-1])} or {fixes[-1]}. "
            "(check_memory=False skips this check.)"
        )
