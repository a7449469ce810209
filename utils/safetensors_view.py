"""Tensors of a checkpoint's safetensors files read in numpy, without torch and without reading what is not used.

:func:`tensor_view` maps one tensor of a checkpoint (``model.safetensors``, or the shard its index names) into
memory read-only (``numpy.memmap``): rows are read from disk when they are first indexed, so a 113 MB embedding table
of which a few thousand rows are looked up costs a few MB. The file format is safetensors' own: an 8-byte
little-endian header length, a JSON header (name -> dtype, shape, data offsets), then the data.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32,
           "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def read_header(path: str | os.PathLike) -> tuple[int, dict]:
    """``(header length, header)`` of a safetensors file; ValueError (one line: what is wrong) where it is none."""
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ValueError(f"{os.path.getsize(path)} bytes, shorter than a safetensors header")
        (length,) = struct.unpack("<Q", head)
        size = os.path.getsize(path)
        if length > size - 8:
            raise ValueError(f"cut short: {size} bytes, its header alone claims {8 + length}")
        try:
            return length, json.loads(fh.read(length))
        except ValueError as exc:  # (UnicodeDecodeError too)
            raise ValueError(f"not a safetensors file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


INDEX = "model.safetensors.index.json"


def weight_map(model_dir: str | os.PathLike) -> dict[str, str] | None:
    """A sharded checkpoint's tensor -> shard file map (its index), or None where it holds one ``model.safetensors``
    (or no index). Raises what reading an unreadable index raises (OSError, ValueError, KeyError, ...)."""
    folder = Path(model_dir)
    if (folder / "model.safetensors").exists() or not (folder / INDEX).is_file():
        return None
    return json.loads((folder / INDEX).read_text(encoding="utf-8"))["weight_map"]


def weights_files(model_dir: str | os.PathLike) -> list[Path]:
    """The checkpoint's safetensors files: ``model.safetensors``, or every shard its index names."""
    mapping, folder = weight_map(model_dir), Path(model_dir)
    return [folder / "model.safetensors"] if mapping is None else [folder / name for name in sorted(set(mapping.values()))]


def weights_file(model_dir: str | os.PathLike, name: str) -> Path:
    """The safetensors file of ``model_dir`` that holds tensor ``name`` (``model.safetensors`` or a shard)."""
    mapping, folder = weight_map(model_dir), Path(model_dir)
    if mapping is None:
        return folder / "model.safetensors"
    if name not in mapping:
        raise KeyError(f"{folder}: no tensor {name!r} in its weights")
    return folder / mapping[name]


def tensor_shapes(model_dir: str | os.PathLike) -> dict[str, list[int]]:
    """Every tensor's name and shape in the checkpoint's weights, from the files' headers."""
    return {k: v["shape"] for f in weights_files(model_dir) for k, v in read_header(f)[1].items() if k != "__metadata__"}


def tensor_view(model_dir: str | os.PathLike, name: str) -> np.ndarray:
    """Tensor ``name`` of the checkpoint in ``model_dir``, mapped read-only (read from disk as it is indexed)."""
    path = weights_file(model_dir, name)
    length, header = read_header(path)
    entry = header.get(name)
    if entry is None:
        raise KeyError(f"{path}: no tensor {name!r}")
    if entry["dtype"] not in _DTYPES:
        raise ValueError(f"{path}: tensor {name!r} is {entry['dtype']}, which numpy does not read")
    begin, end = entry["data_offsets"]
    shape = tuple(entry["shape"])
    dtype = np.dtype(_DTYPES[entry["dtype"]]).newbyteorder("<")
    if end - begin != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
        raise ValueError(f"{path}: tensor {name!r}'s data offsets do not fit its shape {list(shape)}")
    if not shape or 0 in shape:
        with open(path, "rb") as fh:
            fh.seek(8 + length + begin)
            return np.frombuffer(fh.read(end - begin), dtype=dtype).reshape(shape)
    return np.memmap(path, dtype=dtype, mode="r", offset=8 + length + begin, shape=shape)


__all__ = ["read_header", "weight_map", "weights_files", "weights_file", "tensor_shapes", "tensor_view"]
