"""Shared fixtures: tiny random models built in code and an in-memory tokenizer (offline, CPU, seconds)."""

from __future__ import annotations

import atexit
import math
import os
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path


def _import_the_checkout() -> Path:
    """Make ``import audio_minichat`` (here and in subprocesses) load this checkout, never an installed copy.

    The repository root is the package; a link named ``audio_minichat`` to it goes first on ``sys.path`` and
    ``PYTHONPATH``, ahead of site-packages and editable-install finders.
    """
    root = Path(__file__).resolve().parents[1]
    holder = Path(tempfile.mkdtemp(prefix="audio-minichat-checkout-"))
    (holder / "audio_minichat").symlink_to(root, target_is_directory=True)
    atexit.register(shutil.rmtree, holder, ignore_errors=True)
    sys.path.insert(0, str(holder))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(holder), *filter(None, [os.environ.get("PYTHONPATH")])])
    for name in [m for m in sys.modules if m == "audio_minichat" or m.startswith("audio_minichat.")]:
        del sys.modules[name]
    return root


REPO_ROOT = _import_the_checkout()

import numpy as np  # noqa: E402
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    HubertConfig,
    LlamaConfig,
    PreTrainedTokenizerFast,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    WhisperConfig,
    WhisperFeatureExtractor,
)

from audio_minichat import AudioMiniChatConfig, AudioMiniChatForConditionalGeneration, AudioMiniChatProcessor

WORDS = (
    "the a of to and in is it you that he was for on are with as i his they be at one have this from or had by "
    "hot word but what some we can out other were all there when up use your how said an each she which do their "
    "time if will way about many then them write would like so these her long make thing see him two has look more "
    "day could go come did number sound no most people my over know water than call first who may down side been "
    "summarize speech following article sentence short summary hello world"
).split()
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_tokenizer(chat_template: str | None = CHATML) -> PreTrainedTokenizerFast:
    specials = ["<unk>", "<|im_start|>", "<|im_end|>", "<pad>", "<s>", "</s>"]
    vocab = {tok: i for i, tok in enumerate(specials + sorted(set(WORDS)) + list(".,:;!?"))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="<|im_end|>"
    )
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    if chat_template is not None:
        tok.chat_template = chat_template
    return tok


def encoder_config(kind: str):
    if kind == "whisper":
        return WhisperConfig(
            d_model=16, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=32, decoder_layers=1,
            decoder_attention_heads=2, decoder_ffn_dim=32, num_mel_bins=80, max_source_positions=1500, vocab_size=60,
            pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=3,
        )
    common = dict(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        conv_dim=(8, 8, 8), conv_kernel=(10, 3, 3), conv_stride=(5, 4, 4), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2, feat_extract_norm="layer", do_stable_layer_norm=True, mask_time_prob=0.0,
        vocab_size=32,
    )
    return {"hubert": HubertConfig, "wav2vec2": Wav2Vec2Config}[kind](**common)


# A tiny asr_tokens model's options (Whisper's decoding of 2 s windows, a top-2 token mixture) for tests that
# run a shared check on both kinds of model; give it a token map with ``fill_token_map``.
ASR_TOKENS_TINY = dict(audio_frontend="asr_tokens", encoder_window_seconds=2.0, frontend_config=dict(
    asr_prompt_ids=[3], asr_eos_token_id=2, asr_suppress_tokens=[0, 1], asr_token_mixture=2))


def fill_token_map(model, modulo: int = 40) -> None:
    """Map every ASR token id t to LLM token t % modulo, so the token mixture has content."""
    with torch.no_grad():
        table = model.audio_frontend.asr_token_map  # (ASR vocab, pieces): one piece each
        table.fill_(-1)
        table[:, 0] = torch.arange(table.shape[0]) % modulo


def audio_only(model, inputs):
    """The audio embeddings a batch yields (filled slots, per clip) and their ASR tokens, without the LLM."""
    from types import SimpleNamespace

    names = ("input_features", "input_features_mask", "input_values", "input_values_mask", "audio_window_clip", "audio_spans")
    out = model.get_audio_features(**{k: inputs[k] for k in names if k in inputs})
    return SimpleNamespace(audio_embeddings=out.filled_embeddings(), audio_token_ids=out.token_ids)


def tiny_llama_config(tokenizer, max_position_embeddings: int = 8192, tie_word_embeddings: bool = True) -> LlamaConfig:
    """The tests' tiny Llama (2 layers, width 32) for ``tokenizer``'s vocabulary and special tokens."""
    return LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=len(tokenizer), max_position_embeddings=max_position_embeddings, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=tie_word_embeddings,
    )


def make_model(kind: str = "whisper", seed: int = 0, tokenizer=None, **config_kwargs):
    """A tiny AudioMiniChat model and its processor. Returns (model, processor)."""
    torch.manual_seed(seed)
    tokenizer = tokenizer or make_tokenizer()
    text_config = tiny_llama_config(tokenizer)
    config = AudioMiniChatConfig(audio_config=encoder_config(kind), text_config=text_config, **config_kwargs)
    fe = WhisperFeatureExtractor(feature_size=80) if kind == "whisper" else Wav2Vec2FeatureExtractor(do_normalize=True)
    processor = AudioMiniChatProcessor.from_config(config, fe, tokenizer)
    config.audio_token_id = processor.audio_token_id
    model = AudioMiniChatForConditionalGeneration(config).eval()
    return model, processor


def tolerances(dtype: torch.dtype = torch.float32, reduction: int = 1, factor: float = 64.0) -> dict:
    """``assert_close`` tolerances for two computations of the same value that differ only in how floating-point
    reductions are ordered (batching, padding, caching, another CPU's kernels): rounding grows like
    ``eps(dtype) * sqrt(n)`` for ``n`` summed terms; ``factor`` is headroom for a few chained layers. Never a
    number tuned to one CPU."""
    tol = factor * torch.finfo(dtype).eps * math.sqrt(max(int(reduction), 1))
    return {"rtol": tol, "atol": tol}


def speechlike(seconds: float, seed: int = 0, rate: int = 16000) -> np.ndarray:
    """Deterministic noise-modulated tones: a stand-in waveform with structure the encoders can see."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 120 + 40 * rng.random()
    wave = 0.3 * np.sin(2 * np.pi * f0 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(t.shape)
    return wave.astype(np.float32)


@pytest.fixture
def whisper_model():
    return make_model("whisper")


def pytest_configure(config):
    config.addinivalue_line("markers", "integration: slower offline tests on real pretrained weights (run in CI)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI (AUDIO_MINICHAT_STRICT=1) a skipped test fails: missing engines or assets must not hide a test."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("AUDIO_MINICHAT_STRICT") == "1":
        report.outcome = "failed"
        report.longrepr = f"skipped under AUDIO_MINICHAT_STRICT=1 (CI installs everything): {report.longrepr}"


# Python source that makes the top-level modules named in $HIDE_MODULES (comma-separated) invisible, as in an install
# without them: every meta-path finder is wrapped so that find_spec answers None for them (transformers then takes
# them as absent too: it checks with importlib.util.find_spec). Run it first in a child process (``python -c
# HIDE_MODULES + code``) or as its sitecustomize.py.
HIDE_MODULES = textwrap.dedent("""
    import os, sys
    HIDDEN = set(filter(None, os.environ.get("HIDE_MODULES", "").split(",")))

    class Hide:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in HIDDEN:
                return None
            find = getattr(self.inner, "find_spec", None)
            return find(name, path, target) if find else None

    sys.meta_path[:] = [Hide(f) for f in sys.meta_path]
""")
