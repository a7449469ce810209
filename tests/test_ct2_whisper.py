"""CTranslate2 model.bin reader and Whisper conversion.

Unit tests write small synthetic model.bin files with the writer below (no assets needed);
the integration tests convert the pinned Whisper assets and compare greedy decoding with
CTranslate2's own decoding of the same file.
"""
from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from audio_minichat.assets.ct2_whisper import convert_ct2_whisper, read_ct2_model_bin, transcribe

# --------------------------------------------------------------------------------------
# A minimal CTranslate2 model.bin writer (binary version 6)
# --------------------------------------------------------------------------------------
_CODES = {"float32": 0, "int8": 1, "int16": 2, "int32": 3, "float16": 4, "bfloat16": 5}
_NP = {"float32": "<f4", "int8": "i1", "int16": "<i2", "int32": "<i4", "float16": "<f2"}


def _string(text: str) -> bytes:
    raw = text.encode("utf-8") + b"\0"
    return struct.pack("<H", len(raw)) + raw


def ct2_bytes(
    variables: dict[str, tuple[np.ndarray, str]],
    aliases: dict[str, str] | None = None,
    spec: str = "WhisperSpec",
    revision: int = 3,
    version: int = 6,
) -> bytes:
    """Serialise ``{name: (array, dtype_name)}`` (+ aliases) in the CTranslate2 layout."""
    out = bytearray(struct.pack("<I", version) + _string(spec) + struct.pack("<II", revision, len(variables)))
    for name, (array, dtype) in variables.items():
        array = np.asarray(array)
        if dtype == "bfloat16":  # keep the top 16 bits of the float32 pattern
            raw = (np.ascontiguousarray(array, dtype="<f4").view("<u4") >> 16).astype("<u2").tobytes()
        else:
            raw = np.ascontiguousarray(array, dtype=_NP[dtype]).tobytes()
        out += _string(name) + struct.pack("<B", array.ndim) + struct.pack(f"<{array.ndim}I", *array.shape)
        out += struct.pack("<BI", _CODES[dtype], len(raw)) + raw
    aliases = aliases or {}
    out += struct.pack("<I", len(aliases))
    for alias, target in aliases.items():
        out += _string(alias) + _string(target)
    return bytes(out)


def _bf16_exact(x: np.ndarray) -> np.ndarray:
    """float32 values that bfloat16 represents exactly."""
    return (x.astype(np.float32).view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)


# --------------------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------------------
def test_reader_all_dtypes_and_aliases(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "a/f32": (rng.standard_normal((2, 3)).astype(np.float32), "float32"),
        "a/i8": (rng.integers(-128, 128, (4,)).astype(np.int8), "int8"),
        "a/i16": (rng.integers(-30000, 30000, (2, 2)).astype(np.int16), "int16"),
        "a/i32_scalar": (np.array(123456, dtype=np.int32), "int32"),
        "a/f16": (rng.standard_normal((3, 2, 2)).astype(np.float16), "float16"),
        "a/bf16": (_bf16_exact(rng.standard_normal((5, 2))), "bfloat16"),
        "a/empty": (np.zeros((0, 4), dtype=np.float32), "float32"),
    }
    path = tmp_path / "model.bin"
    path.write_bytes(ct2_bytes(arrays, aliases={"a/alias": "a/f32"}, spec="TestSpec", revision=7))

    spec, revision, variables, aliases = read_ct2_model_bin(path)
    assert (spec, revision) == ("TestSpec", 7)
    assert aliases == {"a/alias": "a/f32"}
    assert set(variables) == set(arrays)
    for name, (expected, dtype) in arrays.items():
        got = variables[name]
        assert got.shape == expected.shape, name
        assert got.dtype == (np.float32 if dtype == "bfloat16" else expected.dtype), name
        np.testing.assert_array_equal(got, expected, err_msg=name)


def test_reader_dequantises_int8_with_row_scales(tmp_path):
    rng = np.random.default_rng(1)
    q = rng.integers(-127, 128, (3, 4)).astype(np.int8)
    scale = np.array([2.0, 0.5, 127.0], dtype=np.float32)
    q16 = rng.integers(-1000, 1000, (2, 2)).astype(np.int16)
    path = tmp_path / "model.bin"
    path.write_bytes(ct2_bytes({
        "w/weight": (q, "int8"), "w/weight_scale": (scale, "float32"),
        "v/weight": (q16, "int16"), "v/weight_scale": (np.array(4.0, dtype=np.float32), "float32"),
        "plain_scale": (np.ones(2, dtype=np.float32), "float32"),  # no base variable: kept
    }))

    _, _, variables, _ = read_ct2_model_bin(path)
    assert set(variables) == {"w/weight", "v/weight", "plain_scale"}
    np.testing.assert_allclose(variables["w/weight"], q.astype(np.float32) / scale[:, None], rtol=1e-7)
    np.testing.assert_allclose(variables["v/weight"], q16.astype(np.float32) / 4.0, rtol=1e-7)
    assert variables["w/weight"].dtype == np.float32

    _, _, raw, _ = read_ct2_model_bin(path, dequantize=False)
    assert raw["w/weight"].dtype == np.int8 and "w/weight_scale" in raw


def test_reader_rejects_scale_of_wrong_shape(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(ct2_bytes({"w": (np.ones((3, 2), np.int8), "int8"),
                                "w_scale": (np.ones(2, np.float32), "float32")}))
    with pytest.raises(ValueError, match="one scale per output row"):
        read_ct2_model_bin(path)


def test_reader_truncated_file(tmp_path):
    data = ct2_bytes({"x": (np.arange(6, dtype=np.float32).reshape(2, 3), "float32")}, aliases={"y": "x"})
    path = tmp_path / "model.bin"
    for cut in (0, 3, 7, 20, len(data) - 20, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: truncated"):
            read_ct2_model_bin(path)


@pytest.mark.parametrize("payload, message", [
    (ct2_bytes({}, version=5), "binary version 6"),
    (b"PK\x03\x04" + bytes(60), "binary version 6"),
    (ct2_bytes({}) + b"\0\0", "trailing"),
    (ct2_bytes({}, aliases={"alias": "missing"}), "unknown variable"),
])
def test_reader_rejects_bad_files(tmp_path, payload, message):
    path = tmp_path / "bad.bin"
    path.write_bytes(payload)
    with pytest.raises(ValueError, match=message) as info:
        read_ct2_model_bin(path)
    assert str(path) in str(info.value)


def test_reader_rejects_inconsistent_byte_count(tmp_path):
    data = bytearray(ct2_bytes({"x": (np.zeros(4, np.float32), "float32")}))
    # the u32 byte count sits right before the 16 data bytes, which are followed by the alias count
    offset = len(data) - 4 - 16 - 4
    assert struct.unpack_from("<I", data, offset)[0] == 16
    struct.pack_into("<I", data, offset, 12)
    path = tmp_path / "model.bin"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="should hold 16 bytes"):
        read_ct2_model_bin(path)


# --------------------------------------------------------------------------------------
# Conversion of a synthetic Whisper (random weights exported to CTranslate2 layout)
# --------------------------------------------------------------------------------------
_SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>",
             "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]


def _export_whisper(model) -> dict[str, tuple[np.ndarray, str]]:
    """HF Whisper weights -> CTranslate2 variables (the inverse of the converter's mapping)."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    cfg = model.config
    out: dict[str, tuple[np.ndarray, str]] = {}

    def put(name, array):
        out[name] = (np.asarray(array, dtype=np.float32), "float32")

    def linear(ct2, hf):
        put(f"{ct2}/weight", sd[f"{hf}.weight"])
        put(f"{ct2}/bias", sd[f"{hf}.bias"])

    def norm(ct2, hf):
        put(f"{ct2}/gamma", sd[f"{hf}.weight"])
        put(f"{ct2}/beta", sd[f"{hf}.bias"])

    def fused(ct2, hf, parts):
        put(f"{ct2}/weight", np.concatenate([sd[f"{hf}.{p}_proj.weight"] for p in parts]))
        put(f"{ct2}/bias", np.concatenate([np.zeros(cfg.d_model) if p == "k" else sd[f"{hf}.{p}_proj.bias"]
                                          for p in parts]))

    linear("encoder/conv1", "model.encoder.conv1")
    linear("encoder/conv2", "model.encoder.conv2")
    put("encoder/position_encodings/encodings", sd["model.encoder.embed_positions.weight"])
    for i in range(cfg.encoder_layers):
        c, h = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        fused(f"{c}/self_attention/linear_0", f"{h}.self_attn", "qkv")
        linear(f"{c}/self_attention/linear_1", f"{h}.self_attn.out_proj")
        norm(f"{c}/self_attention/layer_norm", f"{h}.self_attn_layer_norm")
        linear(f"{c}/ffn/linear_0", f"{h}.fc1")
        linear(f"{c}/ffn/linear_1", f"{h}.fc2")
        norm(f"{c}/ffn/layer_norm", f"{h}.final_layer_norm")
    norm("encoder/layer_norm", "model.encoder.layer_norm")
    put("decoder/embeddings/weight", sd["model.decoder.embed_tokens.weight"])
    put("decoder/position_encodings/encodings", sd["model.decoder.embed_positions.weight"])
    for i in range(cfg.decoder_layers):
        c, h = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        fused(f"{c}/self_attention/linear_0", f"{h}.self_attn", "qkv")
        linear(f"{c}/self_attention/linear_1", f"{h}.self_attn.out_proj")
        norm(f"{c}/self_attention/layer_norm", f"{h}.self_attn_layer_norm")
        linear(f"{c}/attention/linear_0", f"{h}.encoder_attn.q_proj")
        fused(f"{c}/attention/linear_1", f"{h}.encoder_attn", "kv")
        linear(f"{c}/attention/linear_2", f"{h}.encoder_attn.out_proj")
        norm(f"{c}/attention/layer_norm", f"{h}.encoder_attn_layer_norm")
        linear(f"{c}/ffn/linear_0", f"{h}.fc1")
        linear(f"{c}/ffn/linear_1", f"{h}.fc2")
        norm(f"{c}/ffn/layer_norm", f"{h}.final_layer_norm")
    norm("decoder/layer_norm", "model.decoder.layer_norm")
    out["encoder/num_heads"] = (np.array(cfg.encoder_attention_heads, np.int16), "int16")
    out["decoder/num_heads"] = (np.array(cfg.decoder_attention_heads, np.int16), "int16")
    for name, value in [("activation", 3), ("pre_norm", 1), ("scale_embeddings", 0), ("alibi", 0)]:
        out[f"decoder/{name}"] = (np.array(value, np.int8), "int8")
    return out


def _write_tokenizer_json(path: Path) -> dict[str, int]:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(_SPECIALS)
    tok.save(str(path))
    return {t: tok.token_to_id(t) for t in _SPECIALS}


@pytest.fixture
def synthetic_whisper(tmp_path):
    """(ct2 dir, source HF model, ct2 variables, special ids) for a tiny random Whisper."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    specials = _write_tokenizer_json(tmp_path / "tokenizer.json")
    vocab = 256 + len(_SPECIALS)
    eot, sot = specials["<|endoftext|>"], specials["<|startoftranscript|>"]
    torch.manual_seed(0)
    config = WhisperConfig(
        vocab_size=vocab, num_mel_bins=8, d_model=16, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=4, encoder_ffn_dim=32, decoder_ffn_dim=24,
        max_source_positions=10, max_target_positions=12,
        bos_token_id=eot, eos_token_id=eot, pad_token_id=eot, decoder_start_token_id=sot,
    )
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():  # HF initialises the (bias-free) k_proj; make the other biases non-trivial too
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.normal_()
    variables = _export_whisper(model)
    (tmp_path / "config.json").write_text(json.dumps({
        "suppress_ids": [5, 7], "suppress_ids_begin": [32, eot], "alignment_heads": [[1, 0]], "lang_ids": []}))
    return tmp_path, model, variables, specials


def _write_bin(directory: Path, variables, aliases=None) -> None:
    aliases = {"decoder/projection/weight": "decoder/embeddings/weight"} if aliases is None else aliases
    (directory / "model.bin").write_bytes(ct2_bytes(variables, aliases))


def test_convert_synthetic_whisper_is_exact(synthetic_whisper):
    directory, source, variables, specials = synthetic_whisper
    _write_bin(directory, variables)
    model, processor = convert_ct2_whisper(directory)

    for key, value in ("d_model", 16), ("encoder_layers", 2), ("decoder_layers", 2), ("encoder_attention_heads", 2), \
            ("decoder_attention_heads", 4), ("encoder_ffn_dim", 32), ("decoder_ffn_dim", 24), ("num_mel_bins", 8), \
            ("max_source_positions", 10), ("max_target_positions", 12), ("vocab_size", 256 + len(_SPECIALS)):
        assert getattr(model.config, key) == value, key
    source_params = dict(source.named_parameters())
    converted = dict(model.named_parameters())
    assert set(converted) == set(source_params)
    for name, param in converted.items():
        assert torch.equal(param, source_params[name]), name
    assert model.proj_out.weight is model.model.decoder.embed_tokens.weight

    features = torch.randn(1, 8, 20)
    decoder_input_ids = torch.tensor([[specials["<|startoftranscript|>"], specials["<|notimestamps|>"], 65]])
    with torch.no_grad():
        expected = source(input_features=features, decoder_input_ids=decoder_input_ids).logits
        got = model(input_features=features, decoder_input_ids=decoder_input_ids).logits
    torch.testing.assert_close(got, expected)

    gen = model.generation_config
    assert gen.decoder_start_token_id == specials["<|startoftranscript|>"]
    assert gen.eos_token_id == gen.pad_token_id == specials["<|endoftext|>"]
    assert gen.no_timestamps_token_id == specials["<|notimestamps|>"]
    assert gen.suppress_tokens == [5, 7] and gen.begin_suppress_tokens == [32, specials["<|endoftext|>"]]
    assert gen.is_multilingual is False
    assert processor.feature_extractor.feature_size == 8
    assert processor.tokenizer.convert_tokens_to_ids("<|notimestamps|>") == specials["<|notimestamps|>"]


def _drop(v):
    v.pop("decoder/layer_1/ffn/linear_1/bias")


def _extra(v):
    v["decoder/layer_0/extra/weight"] = (np.zeros((2, 2), np.float32), "float32")


def _key_bias(v):
    w, dtype = v["encoder/layer_1/self_attention/linear_0/bias"]
    w = w.copy()
    w[16 + 3] = 0.5  # inside the k block
    v["encoder/layer_1/self_attention/linear_0/bias"] = (w, dtype)


def _shape(v):
    v["decoder/layer_1/ffn/linear_0/weight"] = (np.zeros((25, 16), np.float32), "float32")
    v["decoder/layer_1/ffn/linear_0/bias"] = (np.zeros(25, np.float32), "float32")


def _activation(v):
    v["decoder/activation"] = (np.array(1, np.int8), "int8")


@pytest.mark.parametrize("corrupt, message", [
    (_drop, "missing variable 'decoder/layer_1/ffn/linear_1/bias'"),
    (_extra, "not mapped to transformers"),
    (_key_bias, "non-zero key bias"),
    (_shape, r"model.decoder.layers.1.fc1.weight expects shape \(24, 16\)"),
    (_activation, "decoder/activation=1 is not supported"),
])
def test_convert_is_strict(synthetic_whisper, corrupt, message):
    directory, _, variables, _ = synthetic_whisper
    corrupt(variables)
    _write_bin(directory, variables)
    with pytest.raises(ValueError, match=message) as info:
        convert_ct2_whisper(directory)
    assert str(directory / "model.bin") in str(info.value)


def test_convert_requires_tied_projection(synthetic_whisper):
    directory, _, variables, _ = synthetic_whisper
    _write_bin(directory, variables, aliases={})
    with pytest.raises(ValueError, match="decoder/projection/weight"):
        convert_ct2_whisper(directory)


def test_convert_names_missing_files(tmp_path):
    (tmp_path / "model.bin").write_bytes(ct2_bytes({}))
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        convert_ct2_whisper(tmp_path)


# --------------------------------------------------------------------------------------
# Integration: pinned Whisper assets vs CTranslate2, on espeak-ng speech
# --------------------------------------------------------------------------------------
SENTENCES = [
    "The library opens at nine in the morning on weekdays.",
    "My brother bought a new bicycle for his long ride to work.",
    "Please close the window before the rain comes in.",
]
LONG_TEXT = " ".join([
    "The harbour was quiet when the fishing boats came back in the evening.",
    "Every family in the village waited on the pier for news of the catch.",
    "An old sailor told stories about storms he had survived as a young man.",
    "The children listened carefully and asked him many difficult questions.",
    "Later that night the wind grew stronger and the lights went out.",
    "By morning the sky was clear again and the sea was calm and blue.",
    "The baker opened his shop early and the smell of bread filled the street.",
    "Visitors from the city arrived on the afternoon train to see the coast.",
    "They walked along the cliffs and took photographs of the lighthouse.",
    "At sunset everyone gathered in the square to hear the band play music.",
])


def espeak(text: str, tmp_path: Path) -> np.ndarray:
    import soundfile as sf
    import torchaudio

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    wav = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), text], check=True, capture_output=True)
    audio, rate = sf.read(wav, dtype="float32")
    return torchaudio.functional.resample(torch.from_numpy(audio), rate, 16000).numpy()


def _ct2_dir(which: str, cache: Path) -> Path:
    from audio_minichat.assets.offline import AssetNotFoundError, ct2_whisper_dir

    try:
        return ct2_whisper_dir(which, cache_dir=cache)
    except AssetNotFoundError as err:
        pytest.skip(str(err))


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


def _wer(reference: list[str], hypothesis: list[str]) -> float:
    row = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, 1):
        diagonal, row[0] = row[0], i
        for j, hyp_word in enumerate(hypothesis, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (ref_word != hyp_word))
    return row[-1] / max(len(reference), 1)


@pytest.mark.integration
@pytest.mark.parametrize("which", ["tiny.en", "base"])
def test_greedy_decoding_matches_ctranslate2(which, tmp_path):
    ctranslate2 = pytest.importorskip("ctranslate2")
    directory = _ct2_dir(which, tmp_path / "cache")
    model, processor = convert_ct2_whisper(directory)
    tok = processor.tokenizer
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    # CTranslate2's prompt, built independently of the converted generation config
    prompt = ["<|startoftranscript|>"] + (["<|en|>", "<|transcribe|>"] if which == "base" else []) + ["<|notimestamps|>"]
    prompt_ids = tok.convert_tokens_to_ids(prompt)
    reference = ctranslate2.models.Whisper(str(directory), device="cpu", compute_type="float32", intra_threads=2)

    for sentence in SENTENCES:
        audio = espeak(sentence, tmp_path)
        features = processor.feature_extractor(audio, sampling_rate=16000, return_tensors="np").input_features
        features = np.ascontiguousarray(features, dtype=np.float32)
        expected = reference.generate(ctranslate2.StorageView.from_array(features), [prompt_ids],
                                      beam_size=1)[0].sequences_ids[0]
        with torch.inference_mode():
            sequence = model.generate(torch.from_numpy(features))[0].tolist()
        generated = [t for t in sequence if t < eot]  # drop the prompt/eos (special ids start at <|endoftext|>)
        assert generated == expected, (tok.decode(generated), tok.decode(expected))
        expected_text = tok.decode(expected, skip_special_tokens=True)
        assert tok.decode(generated, skip_special_tokens=True).split() == expected_text.split()
        assert len(_words(expected_text)) >= len(_words(sentence)) // 2  # real speech was recognised
        # the public helper (same features, its own suppression processor) decodes the same
        text, ids = transcribe(model, processor, audio, return_token_ids=True)
        assert ids == expected and text.split() == expected_text.split()


@pytest.mark.integration
def test_long_form_transcribes_the_whole_clip(tmp_path):
    directory = _ct2_dir("tiny.en", tmp_path / "cache")
    model, processor = convert_ct2_whisper(directory)
    audio = espeak(LONG_TEXT, tmp_path)
    assert len(audio) > processor.feature_extractor.n_samples  # longer than one 30 s window
    text = transcribe(model, processor, audio)
    reference, hypothesis = _words(LONG_TEXT), _words(text)
    # a lost or repeated 30 s window would change the length by a third or more
    assert abs(len(hypothesis) - len(reference)) <= 0.1 * len(reference), text
    assert _wer(reference, hypothesis) < 0.25, text
