"""A fast reader of a GGUF file's header: scalar metadata and tensor layout, no tensor data.

The ``gguf`` package's ``GGUFReader`` builds numpy views for every element of every metadata array, which
takes ~5 s for SmolLM2's 49k-token vocabulary and ~40 s for Gemma 3's 262k on a busy 2-core machine.
mechscope needs only a few scalar fields (architecture, name, file type) and where the tensor data ends
(to tell a truncated file), so it walks the header with ``struct`` and skips arrays.

Format (GGUF v2/v3, little-endian): ``b"GGUF"``, u32 version, u64 tensor count, u64 metadata count; metadata
entries ``(string key, u32 type, value)``; tensor infos ``(string name, u32 n_dims, u64 dims[n_dims],
u32 ggml type, u64 offset)``; tensor data from the next multiple of ``general.alignment`` (default 32).
A string is a u64 length and UTF-8 bytes; an array is a u32 element type, a u64 count and the elements.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class HeaderError(ValueError):
    """The bytes do not form a GGUF header (not GGUF, unsupported version, or cut short)."""


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a GGUF file."""

    name: str
    shape: tuple[int, ...]
    """Dimensions as stored (GGUF lists the fastest-varying first)."""
    ggml_type: int
    """``gguf.GGMLQuantizationType`` value (0 = F32, 3 = Q4_1, 12 = Q4_K, ...)."""
    offset: int
    """Absolute byte offset of the tensor's data in the file."""


@dataclass(frozen=True)
class Header:
    """What :func:`read_header` found."""

    version: int
    metadata: dict[str, object]
    """Scalar and string metadata; arrays (vocabularies, merges) are skipped and absent."""
    tensors: list[TensorInfo]
    data_offset: int
    """Where tensor data begins."""


class _Cursor:
    def __init__(self, buf) -> None:
        self.buf, self.pos = buf, 0

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise HeaderError(f"the header is cut short at byte {self.pos:,}")
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value

    def string(self) -> str:
        n = self.take("<Q")
        if self.pos + n > len(self.buf):
            raise HeaderError(f"the header is cut short at byte {self.pos:,}")
        s = bytes(self.buf[self.pos:self.pos + n]).decode("utf-8", errors="replace")
        self.pos += n
        return s

    def skip_string(self) -> None:
        n = self.take("<Q")
        self.pos += n

    def value(self, vtype: int):
        if vtype in _SCALARS:
            return self.take(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, count = self.take("<I"), self.take("<Q")
            if etype in _SCALARS:
                self.pos += count * struct.calcsize(_SCALARS[etype])
            elif etype == _STRING:
                for _ in range(count):
                    self.skip_string()
            else:  # nested arrays do not occur in practice
                for _ in range(count):
                    self.value(etype)
            if self.pos > len(self.buf):
                raise HeaderError("the header is cut short inside an array")
            return None
        raise HeaderError(f"unknown metadata value type {vtype} at byte {self.pos:,}")


def read_header(path: Path) -> Header:
    """Parse the header of the GGUF file ``path``; raise :class:`HeaderError` when it is not a readable one."""
    with path.open("rb") as f:
        if path.stat().st_size < 24:
            raise HeaderError("the file is too short for a GGUF header")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            c = _Cursor(buf)
            if bytes(buf[:4]) != b"GGUF":
                raise HeaderError("the file does not start with b'GGUF'")
            c.pos = 4
            version = c.take("<I")
            if version not in (2, 3):
                raise HeaderError(f"GGUF version {version} is not supported (only 2 and 3)")
            n_tensors, n_kv = c.take("<Q"), c.take("<Q")
            metadata: dict[str, object] = {}
            for _ in range(n_kv):
                key = c.string()
                value = c.value(c.take("<I"))
                if value is not None:
                    metadata[key] = value
            infos = []
            for _ in range(n_tensors):
                name = c.string()
                shape = tuple(c.take("<Q") for _ in range(c.take("<I")))
                infos.append((name, shape, c.take("<I"), c.take("<Q")))
            align = int(metadata.get("general.alignment", 32))
            data_offset = -(-c.pos // align) * align
    tensors = [TensorInfo(n, s, t, data_offset + o) for n, s, t, o in infos]
    return Header(version, metadata, tensors, data_offset)


def data_end(header: Header) -> int:
    """Byte offset where the last tensor's data ends (needs the ``gguf`` package's block sizes)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    end = header.data_offset
    for t in header.tensors:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(t.ggml_type)]
        n = 1
        for d in t.shape:
            n *= d
        end = max(end, t.offset + n // block * type_size)
    return end
