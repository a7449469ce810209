"""CTranslate2 Whisper directory (``model.bin`` + ``config.json`` + ``tokenizer.json``) -> transformers'
:class:`~transformers.WhisperForConditionalGeneration` and :class:`~transformers.WhisperProcessor`, every
weight assigned exactly once onto a parameter of the same shape.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .ct2_model_bin import read_ct2_model_bin, write_ct2_model_bin

if TYPE_CHECKING:
    from transformers import GenerationConfig, WhisperForConditionalGeneration, WhisperProcessor, WhisperTokenizer

__all__ = ["convert_ct2_whisper", "write_whisper_ct2"]


_WHISPER_SPEC = "WhisperSpec"
# CTranslate2's ActivationType enum value for exact (erf) GELU, Whisper's activation.
_CT2_ACTIVATION_GELU = 3
_SAMPLING_RATE = 16_000
# Whisper timestamps: <|0.00|> ... <|30.00|> in steps of 20 ms.
_N_TIMESTAMP_TOKENS = 1501


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


class _VariableWriter:
    """The converter's mapping run backwards: :func:`_map_whisper_weights` names each CTranslate2 variable and the
    transformers weight it becomes; here each such pair becomes the CTranslate2 variable, read from the transformers
    state when the file is written (one table of names for both directions; one variable in memory at a time).
    ``take`` hands back the variable's name, which ``put`` fills."""

    path = "the exported Whisper"

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        self.state = state
        self.variables: dict = {}  # name -> a callable giving its float32 array

    @property
    def used(self):  # every variable written is one the mapping named
        return self.variables.keys()

    def _array(self, hf_name: str) -> np.ndarray:
        return self.state[hf_name].detach().to(device="cpu", dtype=torch.float32).numpy()

    def _add(self, name: str, make) -> None:
        if name in self.variables:
            raise ValueError(f"CTranslate2 variable {name!r} written twice")
        self.variables[name] = make

    def take(self, name: str) -> str:
        return name

    def put(self, hf_name: str, name: str, source: str) -> None:
        self._add(name, lambda: self._array(hf_name))

    def linear(self, ct2: str, hf: str) -> None:
        self.put(f"{hf}.weight", f"{ct2}/weight", ct2)
        self.put(f"{hf}.bias", f"{ct2}/bias", ct2)

    def norm(self, ct2: str, hf: str) -> None:
        self.put(f"{hf}.weight", f"{ct2}/gamma", ct2)
        self.put(f"{hf}.bias", f"{ct2}/beta", ct2)

    def fused(self, ct2: str, hf_prefix: str, parts: tuple[str, ...]) -> None:
        names = [f"{hf_prefix}.{part}_proj" for part in parts]
        self._add(f"{ct2}/weight", lambda: np.concatenate([self._array(f"{n}.weight") for n in names]))
        # Whisper's k_proj has no bias: zeros, as CTranslate2 stores it
        self._add(f"{ct2}/bias", lambda: np.concatenate([
            np.zeros(self.state[f"{n}.weight"].shape[0], np.float32) if part == "k" else self._array(f"{n}.bias")
            for part, n in zip(parts, names)]))


def write_whisper_ct2(model: "WhisperForConditionalGeneration", tokenizer, directory: str | os.PathLike[str]) -> Path:
    """Write a transformers Whisper into ``directory`` as a CTranslate2 Whisper model (``model.bin`` with float32
    weights, written one variable at a time; ``config.json``; ``vocabulary.json``) that ``ctranslate2.models.Whisper``
    loads: the inverse of :func:`convert_ct2_whisper` (the same name mapping), so the weights are the model's own,
    exactly. ``tokenizer``: its Whisper tokenizer (the vocabulary's token strings; ids past its end get
    placeholders). The generation config names the control tokens (``decoder_start_token_id``, ``eos_token_id``,
    ``no_timestamps_token_id``)."""
    config, gen = model.config, model.generation_config
    dims = _WhisperDims(config.num_mel_bins, config.d_model, config.vocab_size, config.encoder_layers,
                        config.decoder_layers, config.encoder_attention_heads, config.decoder_attention_heads,
                        config.encoder_ffn_dim, config.decoder_ffn_dim, config.max_source_positions,
                        config.max_target_positions)
    tied = {"decoder/projection/weight": "decoder/embeddings/weight"}
    writer = _VariableWriter(model.state_dict())
    _map_whisper_weights(writer, dims, tied)
    variables = writer.variables
    variables["encoder/num_heads"] = np.array(dims.encoder_heads, np.int16)
    variables["decoder/num_heads"] = np.array(dims.decoder_heads, np.int16)
    variables["decoder/activation"] = np.array(_CT2_ACTIVATION_GELU, np.int8)
    for name, value in (("pre_norm", 1), ("scale_embeddings", 0), ("alibi", 0), ("start_from_zero_embedding", 0)):
        variables[f"decoder/{name}"] = np.array(value, np.int8)
    directory = Path(directory)
    write_ct2_model_bin(directory / "model.bin", _WHISPER_SPEC, 3, variables, tied)
    # CTranslate2 finds Whisper's control tokens by their text: the generation config's ids get them (and only they)
    tokens = tokenizer.convert_ids_to_tokens(list(range(min(len(tokenizer), dims.vocab_size))))
    tokens += [None] * (dims.vocab_size - len(tokens))
    control = {int(gen.decoder_start_token_id): "<|startoftranscript|>", int(gen.eos_token_id): "<|endoftext|>",
               int(gen.no_timestamps_token_id): "<|notimestamps|>"}
    seen: set[str] = set()
    for i, token in enumerate(tokens):
        token = control.get(i, token)
        if token is None or token in seen or (token in control.values() and i not in control):
            token = f"<|ct2_unused_{i}|>"
        tokens[i] = token
        seen.add(token)
    within = lambda ids: [int(t) for t in ids or [] if 0 <= int(t) < dims.vocab_size]  # noqa: E731
    ct2_config = {
        "suppress_ids": within(gen.suppress_tokens),
        "suppress_ids_begin": within(gen.begin_suppress_tokens),
        "lang_ids": sorted(int(i) for i in (getattr(gen, "lang_to_id", None) or {}).values()),
        "alignment_heads": [[int(a), int(b)] for a, b in getattr(gen, "alignment_heads", None) or []],
    }
    (directory / "config.json").write_text(json.dumps(ct2_config), encoding="utf-8")
    (directory / "vocabulary.json").write_text(json.dumps(tokens), encoding="utf-8")
    return directory


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
