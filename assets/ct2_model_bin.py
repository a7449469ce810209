"""Reader of CTranslate2 ``model.bin`` files (binary format version 6) into numpy arrays.

``model.bin`` layout (little-endian): ``u32 version``; ``string spec_name``;
``u32 revision``; ``u32 n_vars`` then per variable ``string name, u8 rank,
u32 dims[rank], u8 dtype, u32 n_bytes, raw bytes``; then ``u32 n_aliases`` and
``(alias, target)`` string pairs.  A string is a ``u16`` length (counting a
trailing NUL), the UTF-8 bytes and the NUL.
"""
from __future__ import annotations

import os
import struct

import numpy as np

__all__ = ["CT2_BINARY_VERSION", "read_ct2_model_bin", "write_ct2_model_bin"]


#: The only binary layout this reader understands (the one written by CTranslate2 >= 3).
CT2_BINARY_VERSION = 6

#: dtype codes of the binary format.  bf16 has no numpy dtype: it is stored as
#: ``uint16`` and widened to float32 by a 16-bit shift.
_CT2_DTYPES: dict[int, tuple[str, np.dtype]] = {
    0: ("float32", np.dtype("<f4")),
    1: ("int8", np.dtype("i1")),
    2: ("int16", np.dtype("<i2")),
    3: ("int32", np.dtype("<i4")),
    4: ("float16", np.dtype("<f2")),
    5: ("bfloat16", np.dtype("<u2")),
}

_SCALE_SUFFIX = "_scale"


class _Cursor:
    """Bounds-checked little-endian reader over an in-memory file."""

    def __init__(self, data: bytearray, path: str) -> None:
        self.data = data
        self.view = memoryview(data)
        self.path = path
        self.offset = 0

    def _need(self, n: int, what: str) -> None:
        if self.offset + n > len(self.data):
            raise ValueError(
                f"{self.path}: truncated CTranslate2 model file: needs {n} byte(s) for {what} at offset "
                f"{self.offset}, but the file has only {len(self.data)} bytes"
            )

    def unpack(self, fmt: str, what: str) -> int:
        size = struct.calcsize("<" + fmt)
        self._need(size, what)
        (value,) = struct.unpack_from("<" + fmt, self.data, self.offset)
        self.offset += size
        return value

    def string(self, what: str) -> str:
        length = self.unpack("H", f"the length of {what}")
        self._need(length, what)
        raw = bytes(self.view[self.offset : self.offset + length])
        self.offset += length
        if length == 0 or raw[-1] != 0:
            raise ValueError(f"{self.path}: corrupt CTranslate2 model file: {what} at offset "
                             f"{self.offset - length} is not NUL-terminated")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"{self.path}: corrupt CTranslate2 model file: {what} is not UTF-8 ({err})") from None

    def array(self, n_bytes: int, dtype: np.dtype, shape: tuple[int, ...], what: str) -> np.ndarray:
        self._need(n_bytes, what)
        arr = np.frombuffer(self.data, dtype=dtype, count=n_bytes // dtype.itemsize, offset=self.offset)
        self.offset += n_bytes
        return arr.reshape(shape)


def _bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    """Widen bfloat16 bit patterns (``uint16``) to float32."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def _dequantize(q: np.ndarray, scale: np.ndarray, name: str, path: str) -> np.ndarray:
    """``w = q / scale`` with one scale per output row (dim 0), or a single scale."""
    scale = np.asarray(scale, dtype=np.float32)
    if scale.ndim == 0 or scale.size == 1:
        return q.astype(np.float32) / scale.reshape(())
    if scale.ndim != 1 or q.ndim == 0 or scale.shape[0] != q.shape[0]:
        raise ValueError(
            f"{path}: variable {name!r} of shape {q.shape} has a scale of shape {scale.shape}; "
            f"expected one scale per output row ({q.shape[0] if q.ndim else 1},)"
        )
    return q.astype(np.float32) / scale.reshape((-1,) + (1,) * (q.ndim - 1))


def read_ct2_model_bin(
    path: str | os.PathLike[str], *, dequantize: bool = True
) -> tuple[str, int, dict[str, np.ndarray], dict[str, str]]:
    """Read a CTranslate2 ``model.bin`` (binary version 6).

    Args:
        path: the ``model.bin`` file.
        dequantize: replace each quantised integer variable ``X`` that has a companion
            ``X_scale`` by the float32 array ``X / X_scale`` (one scale per output row)
            and drop ``X_scale``.  With ``False`` both are returned as stored.

    Returns:
        ``(spec_name, revision, variables, aliases)``: ``variables`` maps names to numpy
        arrays (float16/float32/int arrays as stored, bfloat16 widened to float32, rank-0
        arrays for scalar options such as ``encoder/num_heads``); ``aliases`` maps an alias
        name to the variable it refers to (e.g. a tied output projection).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: naming the file, for an unknown version (not a CTranslate2 file),
            an unknown dtype, inconsistent sizes, a truncated file or trailing bytes.
    """
    path_str = os.fspath(path)
    size = os.path.getsize(path_str)
    data = bytearray(size)
    with open(path_str, "rb") as handle:
        if handle.readinto(data) != size:
            raise ValueError(f"{path_str}: could not read the whole file ({size} bytes)")
    cur = _Cursor(data, path_str)

    if size < 4:
        raise ValueError(f"{path_str}: truncated or not a CTranslate2 model file (only {size} bytes)")
    version = cur.unpack("I", "the binary version")
    if version != CT2_BINARY_VERSION:
        raise ValueError(
            f"{path_str}: not a CTranslate2 model.bin of binary version {CT2_BINARY_VERSION} "
            f"(the first 4 bytes read as version {version})"
        )
    spec_name = cur.string("the spec name")
    revision = cur.unpack("I", "the spec revision")

    n_vars = cur.unpack("I", "the variable count")
    variables: dict[str, np.ndarray] = {}
    for index in range(n_vars):
        name = cur.string(f"the name of variable #{index}")
        rank = cur.unpack("B", f"the rank of {name!r}")
        shape = tuple(cur.unpack("I", f"dimension {d} of {name!r}") for d in range(rank))
        code = cur.unpack("B", f"the dtype of {name!r}")
        if code not in _CT2_DTYPES:
            raise ValueError(f"{path_str}: variable {name!r} has unknown dtype code {code}")
        dtype_name, np_dtype = _CT2_DTYPES[code]
        n_bytes = cur.unpack("I", f"the byte count of {name!r}")
        expected = int(np.prod(shape, dtype=np.int64)) * np_dtype.itemsize
        if n_bytes != expected:
            raise ValueError(
                f"{path_str}: variable {name!r} of shape {shape} and dtype {dtype_name} should hold "
                f"{expected} bytes but declares {n_bytes}"
            )
        if name in variables:
            raise ValueError(f"{path_str}: variable {name!r} is stored twice")
        arr = cur.array(n_bytes, np_dtype, shape, f"the data of {name!r}")
        variables[name] = _bf16_to_f32(arr) if dtype_name == "bfloat16" else arr

    n_aliases = cur.unpack("I", "the alias count")
    aliases: dict[str, str] = {}
    for index in range(n_aliases):
        alias = cur.string(f"alias #{index}")
        target = cur.string(f"the target of alias {alias!r}")
        if target not in variables:
            raise ValueError(f"{path_str}: alias {alias!r} points to unknown variable {target!r}")
        aliases[alias] = target

    if cur.offset != size:
        raise ValueError(
            f"{path_str}: {size - cur.offset} unexpected trailing byte(s) after the alias table "
            f"(a wrongly concatenated or corrupt file?)"
        )

    if dequantize:
        for name in [n for n in variables if n.endswith(_SCALE_SUFFIX)]:
            base = name[: -len(_SCALE_SUFFIX)]
            if base in variables and variables[base].dtype.kind == "i":
                variables[base] = _dequantize(variables[base], variables.pop(name), base, path_str)
    return spec_name, revision, variables, aliases


_CT2_CODES = {np.dtype(dtype): code for code, (_, dtype) in _CT2_DTYPES.items() if code != 5}  # (bf16: not written)


def _string_bytes(text: str) -> bytes:
    raw = text.encode("utf-8") + b"\0"
    return struct.pack("<H", len(raw)) + raw


def write_ct2_model_bin(path: str | os.PathLike[str], spec_name: str, revision: int, variables: dict,
                        aliases: dict[str, str] | None = None) -> None:
    """Write a CTranslate2 ``model.bin`` (binary version 6), the layout :func:`read_ct2_model_bin` reads.

    ``variables`` maps names to numpy arrays (float32, float16, int8, int16 or int32; rank 0 for scalar options) or
    to callables returning one, which are called one at a time as the file is written (a large model is never
    held twice in memory)."""
    aliases = aliases or {}
    for alias, target in aliases.items():
        if target not in variables:
            raise ValueError(f"alias {alias!r} points to unknown variable {target!r}")
    with open(path, "wb") as out:
        out.write(struct.pack("<I", CT2_BINARY_VERSION) + _string_bytes(spec_name)
                  + struct.pack("<II", revision, len(variables)))
        for name, value in variables.items():
            array = np.asarray(value() if callable(value) else value)  # (not ascontiguousarray: it makes scalars rank 1)
            if array.dtype not in _CT2_CODES:
                raise ValueError(f"variable {name!r}: dtype {array.dtype} has no CTranslate2 code")
            raw = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()  # (C order)
            out.write(_string_bytes(name) + struct.pack(f"<B{array.ndim}I", array.ndim, *array.shape)
                      + struct.pack("<BI", _CT2_CODES[array.dtype], len(raw)))
            out.write(raw)
            del array, raw
        out.write(struct.pack("<I", len(aliases)))
        for alias, target in aliases.items():
            out.write(_string_bytes(alias) + _string_bytes(target))
