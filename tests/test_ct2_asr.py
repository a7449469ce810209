"""The cascade's Whisper decoding in CTranslate2 (inference/ct2_asr.py): the checkpoint's own weights exported exactly,
and the same transcripts and timed segments as transformers' ``generate`` (the reference), on a small random Whisper
laid out as Whisper is (every decoding rule exercised: random weights write timestamps, pairs and caps in odd
places) and on the real default with the examples."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

ctranslate2 = pytest.importorskip("ctranslate2")

from audio_minichat.assets.ct2_convert import _map_whisper_weights, _WeightMapper, write_whisper_ct2  # noqa: E402
from audio_minichat.assets.ct2_model_bin import read_ct2_model_bin  # noqa: E402
from audio_minichat.assets.ct2_whisper import transcribe  # noqa: E402
from audio_minichat.inference.ct2_asr import Ct2Whisper, cached_folder, ensure_folder, log_mel, unavailable  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>", "<|startoflm|>",
            "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]
TIMESTAMPS = 1501  # <|0.00|> ... <|30.00|>


def small_whisper(seed: int = 0):
    """(a random Whisper with Whisper's vocabulary layout: 256 byte tokens, the control tokens, the timestamps; its
    WhisperProcessor)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (GenerationConfig, PreTrainedTokenizerFast, WhisperConfig, WhisperFeatureExtractor,
                              WhisperForConditionalGeneration, WhisperProcessor)

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer, backend.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    backend.add_special_tokens(SPECIALS + [f"<|{i * 0.02:.2f}|>" for i in range(TIMESTAMPS)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>")
    ids = {t: backend.token_to_id(t) for t in SPECIALS}
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    config = WhisperConfig(vocab_size=len(tokenizer), num_mel_bins=80, d_model=64, encoder_layers=2, decoder_layers=2,
                           encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128,
                           max_source_positions=1500, max_target_positions=448, bos_token_id=eot, eos_token_id=eot,
                           pad_token_id=eot, decoder_start_token_id=sot)
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():  # large enough weights that decoding varies with the audio and the position
        for name, param in model.named_parameters():
            if "layer_norm" in name or name.endswith("bias"):
                param.fill_(float("layer_norm" in name and name.endswith("weight")))
            elif "embed" in name:
                param.normal_(0.0, 1.0 if "embed_tokens" in name else 0.5)
            else:
                param.normal_(0.0, 2.0 / (param[0].numel()) ** 0.5)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot, bos_token_id=eot, eos_token_id=eot, pad_token_id=eot, max_length=448,
        no_timestamps_token_id=ids["<|notimestamps|>"], suppress_tokens=[1, 2, 7, ids["<|startofprev|>"], 5000],
        begin_suppress_tokens=[220, eot], max_initial_timestamp_index=50, is_multilingual=False, return_timestamps=False)
    return model, WhisperProcessor(feature_extractor=WhisperFeatureExtractor(), tokenizer=tokenizer)


def _fast(model, processor, tmp_path) -> Ct2Whisper:
    """``model`` as if saved in ``tmp_path/ckpt``, written once into ``tmp_path/cache`` and run from there."""
    (tmp_path / "ckpt").mkdir(exist_ok=True)
    return Ct2Whisper.from_model(model, processor, tmp_path / "ckpt", threads=1, cache_dir=tmp_path / "cache")


def _audio(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 0.3 * t)  # louder and quieter stretches
    return (0.1 * envelope * (np.sin(2 * np.pi * 220 * t) + rng.standard_normal(t.size))).astype(np.float32)


def test_the_export_is_the_models_own_weights_exactly(tmp_path):
    """write_whisper_ct2's model.bin read back and mapped by the converter's own table gives every weight bit for bit;
    the vocabulary names the control tokens where the generation config puts them."""
    import json

    model, processor = small_whisper()
    assert write_whisper_ct2(model, processor.tokenizer, tmp_path) == tmp_path
    spec, revision, variables, aliases = read_ct2_model_bin(tmp_path / "model.bin")
    assert (spec, revision, aliases) == ("WhisperSpec", 3, {"decoder/projection/weight": "decoder/embeddings/weight"})
    assert int(variables["encoder/num_heads"]) == int(variables["decoder/num_heads"]) == 4
    assert int(variables["decoder/activation"]) == 3 and variables["decoder/embeddings/weight"].dtype == np.float32
    from audio_minichat.assets.ct2_convert import _WhisperDims

    c = model.config
    dims = _WhisperDims(80, 64, c.vocab_size, 2, 2, 4, 4, 128, 128, 1500, 448)
    mapper = _WeightMapper(variables, "exported", torch.float32)
    _map_whisper_weights(mapper, dims, aliases)  # raises on any variable left over
    source = dict(model.named_parameters())
    assert set(mapper.state) == set(source)
    for name, value in mapper.state.items():
        assert torch.equal(value, source[name]), name
    vocabulary = json.loads((tmp_path / "vocabulary.json").read_text())
    gen = model.generation_config
    assert len(vocabulary) == len(set(vocabulary)) == c.vocab_size
    assert [vocabulary[gen.decoder_start_token_id], vocabulary[gen.eos_token_id], vocabulary[gen.no_timestamps_token_id]] == [
        "<|startoftranscript|>", "<|endoftext|>", "<|notimestamps|>"]
    assert json.loads((tmp_path / "config.json").read_text())["suppress_ids"] == [1, 2, 7, gen.suppress_tokens[3]]  # 5000: past the vocabulary


@pytest.mark.parametrize("seconds, max_length", [(7.0, 448), (7.0, 12), (75.0, 64), (75.0, 9)])
def test_transcripts_equal_transformers_on_a_random_whisper(seconds, max_length, tmp_path):
    """Up to 30 s (<|notimestamps|>) and the long-form path (timestamps, seeking), with the config's cap at the
    decoder's positions and below (transformers raises max_length by the prompt at every window; CTranslate2 is
    asked for exactly that)."""
    model, processor = small_whisper()
    model.generation_config.max_length = max_length
    fast = _fast(model, processor, tmp_path)
    texts = []
    for seed in range(2 if max_length < 448 else 1):  # (at 448 every window writes 446 tokens: one clip is enough)
        clip = _audio(seconds, seed)
        texts.append(transcribe(model, processor, clip))
        assert fast.transcribe(clip) == texts[-1], seed
    assert any(texts)
    if seconds < 30 and max_length < 448:  # the cap binds (this model never writes the end token), so equal
        # transcripts mean transformers stopped each window after as many tokens: max_length on the first window
        prompt = fast.init_tokens + [fast.no_timestamps]
        assert len(fast._decode(fast._features(clip), prompt, max_length)) == max_length


@pytest.mark.parametrize("seconds", [7.0, 75.0])
def test_timed_segments_equal_transformers_on_a_random_whisper(seconds, tmp_path):
    """inference.subtitles' segments (start, end, tokens): timestamps from the first window on, times to the bit."""
    from audio_minichat.inference.subtitles import MAX_TOKENS_PER_WINDOW, _whisper_segments

    model, processor = small_whisper(seed=1)
    fast = _fast(model, processor, tmp_path)
    for seed in range(2):
        clip = _audio(seconds, 10 + seed)
        expected = _whisper_segments(model, processor, clip)  # transformers' generate(return_segments=True)
        got = fast.segments(clip, MAX_TOKENS_PER_WINDOW)
        assert len(expected) >= 2  # random weights write pairs of timestamps: several segments
        assert got == expected


@pytest.mark.parametrize("sequence, frames", [
    ([10, 11, 12], 30),  # no timestamp: the whole window (its length computed in float32, as transformers does)
    ([10, 11, 12], 2977),
    ([300, 10, 11], 54),  # one timestamp, not <|0.00|>: the segment ends there
    ([265, 10, 11], 58),  # only <|0.00|>
    ([265, 10, 300, 300, 11, 12, 400], 3000),  # pairs, ending on a single timestamp: the whole window
    ([265, 10, 300, 300, 11, 12, 400, 400, 13], 3000),  # pairs, the last segment unfinished: seek to the last pair
    ([265, 10, 300, 301, 11, 400, 400], 1200),
])
def test_a_windows_segments_and_seek_are_transformers(sequence, frames):
    """Ct2Whisper._split against transformers' own _retrieve_segment on the same decoded window."""
    from transformers.models.whisper.generation_whisper import WhisperGenerationMixin

    fast = Ct2Whisper.__new__(Ct2Whisper)
    fast.timestamp_begin, fast.input_stride = 265, 2
    seek = 1234
    expected, offset = WhisperGenerationMixin._retrieve_segment(
        seek_sequence=torch.tensor(sequence), seek_outputs=[None], time_offset=torch.tensor([seek], dtype=torch.float64) * 0.02 / 2,
        timestamp_begin=265, seek_num_frames=torch.tensor([frames]), time_precision=0.02, time_precision_features=0.01,
        input_stride=2, prev_idx=0, idx=0, return_token_timestamps=False, decoder_input_ids=torch.tensor([[1]]))
    got, advance = fast._split(sequence, seek, frames)
    assert advance == int(offset)
    assert got == [{"start": float(e["start"]), "end": float(e["end"]), "tokens": e["tokens"].tolist()} for e in expected]


@pytest.mark.parametrize("seconds", [0.3, 7.0, 30.0, 75.0])
def test_the_numpy_features_are_transformers_features(seconds):
    """log_mel against transformers' WhisperFeatureExtractor (padded to 30 s up to one window; the whole clip beyond),
    within float32 rounding of an FFT of 400 points (the features are log10 of a power spectrum, scaled by 1/4)."""
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor()
    clip = _audio(seconds, 3)
    if clip.size <= fe.n_samples:
        expected = fe(clip, sampling_rate=16000, return_tensors="np")["input_features"][0]
    else:
        expected = fe(clip, sampling_rate=16000, return_tensors="np", truncation=False, padding="longest")["input_features"][0]
    got = log_mel(clip, fe.mel_filters, fe.n_fft, fe.hop_length, fe.n_samples)
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-4)


def test_the_folder_is_written_once_per_checkpoint_and_a_prefetch_is_waited_for_or_stopped(tmp_path):
    """ensure_folder: none before, one complete folder after (no temporary folder left), the same folder again, a
    new key once a checkpoint file changes (and, written, it replaces the old one). Ct2Whisper runs it without transformers' objects: the same transcript
    as transformers; a prefetched clip is transcribed once (its result waited for), a prefetch of another clip is
    stopped at its next window and the clip asked for is transcribed; a transcription after it runs on
    ``later_threads``."""
    import os
    import time

    model, processor = small_whisper()
    ckpt, cache = tmp_path / "ckpt", tmp_path / "cache"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    assert cached_folder(ckpt, cache) is None
    folder = ensure_folder(model, processor, ckpt, cache)
    assert cached_folder(ckpt, cache) == folder and ensure_folder(model, processor, ckpt, cache) == folder
    assert sorted(p.name for p in (cache / "ct2").iterdir()) == [folder.name]
    assert {"model.bin", "asr_settings.json", "mel_filters.npy", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    fast = Ct2Whisper(folder, threads=1)
    clip, other = _audio(7.0, 0), _audio(75.0, 1)
    assert fast.transcribe(clip) == transcribe(model, processor, clip)
    calls = []
    original = fast._sequential
    fast._sequential = lambda *a, **k: calls.append(1) or original(*a, **k)
    fast.prefetch(clip)
    assert fast.transcribe(clip) == transcribe(model, processor, clip) and len(calls) == 1
    fast.prefetch(other)
    stop = fast._prefetched[2]
    assert fast.transcribe(clip) == transcribe(model, processor, clip) and stop.is_set() and len(calls) == 3
    fast.later_threads = 2  # after the prefetch: the threads asked for (SpeechLLM sets torch's)
    assert fast.transcribe(clip) == transcribe(model, processor, clip) and fast.threads == 2
    os.utime(ckpt / "config.json", ns=(time.time_ns(), time.time_ns() + 10**9))
    assert cached_folder(ckpt, cache) is None
    newer = ensure_folder(model, processor, ckpt, cache)  # the checkpoint written again: its old folder goes
    assert newer != folder and sorted(p.name for p in (cache / "ct2").iterdir()) == [newer.name]


def test_a_folder_transcribes_with_neither_torch_nor_transformers_imported(tmp_path):
    """What the CLI's cascade runs before the model loads: Ct2Whisper on a folder, a wav file read by load_audio."""
    import soundfile as sf
    from test_startup import HEAVY, imported_by

    model, processor = small_whisper()
    (tmp_path / "ckpt").mkdir()
    folder = ensure_folder(model, processor, tmp_path / "ckpt", tmp_path / "cache")
    clip = _audio(7.0, 0)
    sf.write(str(tmp_path / "a.wav"), clip, 16000, subtype="FLOAT")
    modules, run = imported_by([], code=(
        "from audio_minichat.inference.ct2_asr import Ct2Whisper; from audio_minichat.audio_io import load_audio; "
        f"print(Ct2Whisper({str(folder)!r}).transcribe(load_audio({str(tmp_path / 'a.wav')!r})))"))
    assert run.returncode == 0, run.stderr
    assert run.stdout.rstrip("\n") == transcribe(model, processor, clip)
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))


def test_which_whisper_can_run_and_why_not():
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    model, _ = small_whisper()
    assert unavailable(model) is None
    plain = WhisperForConditionalGeneration(WhisperConfig(  # as the tests' tiny Whisper: no <|notimestamps|>
        d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, vocab_size=60, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        decoder_start_token_id=3))
    assert unavailable(plain) == "its generation config lacks Whisper's control tokens (start, end, <|notimestamps|>) in their order"
    multilingual = copy.deepcopy(model)
    gen = multilingual.generation_config
    gen.is_multilingual, gen.lang_to_id, gen.task_to_id = True, {"<|en|>": 258}, {"transcribe": 260}
    assert unavailable(multilingual) == "a multilingual Whisper whose language is left to detection"
    gen.language = "en"
    assert unavailable(multilingual) is None


# --------------------------------------------------------------------------------------------------------------
# the real default
# --------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def default_llm():
    from audio_minichat.assets.default_build import build_default
    from audio_minichat.inference.speech_llm import SpeechLLM

    return SpeechLLM(build_default())


@pytest.mark.integration
def test_the_default_transcribes_the_examples_the_same_with_either_backend(default_llm):
    """examples/short.wav (one window) and the first 36 s of examples/news_2min.wav (two windows, long-form): the
    cascade's transcript through CTranslate2 equals transformers' word for word, and the answer names its backend."""
    import soundfile as sf

    from audio_minichat.inference.speech_llm import SpeechLLM

    short, _ = sf.read(str(ROOT / "examples" / "short.wav"), dtype="float32")
    news, _ = sf.read(str(ROOT / "examples" / "news_2min.wav"), dtype="float32")
    reference = copy.copy(default_llm)  # the same model, transformers' decoding
    reference._asr, reference._ct2, reference.asr_backend = None, None, "transformers"
    assert default_llm.asr_backend == SpeechLLM.asr_backend == "auto"
    texts = []
    for clip in (short, news[: 36 * 16000]):
        fast, slow = default_llm.transcribe(clip, sampling_rate=16000), reference.transcribe(clip, sampling_rate=16000)
        assert (fast.asr_backend, slow.asr_backend) == ("ctranslate2", "transformers")
        assert fast.text == slow.text and len(fast.text.split()) > 30
        texts.append(fast.text)
    assert texts[0].startswith("Hi Maya, it's Tom.") and texts[1].startswith("Harbor Town switches its ferries to tidal power.")


@pytest.mark.integration
def test_asr_backend_is_checked_and_forcing_ctranslate2_off_the_cpu_says_why(default_llm):
    broken = copy.copy(default_llm)
    broken._asr, broken._ct2, broken.asr_backend = None, None, "onnx"
    with pytest.raises(ValueError, match="asr_backend must be one of auto, ctranslate2, transformers, got 'onnx'"):
        broken._load_asr()
    elsewhere = copy.copy(default_llm)
    elsewhere._asr, elsewhere._ct2, elsewhere.asr_backend, elsewhere.device = None, None, "ctranslate2", torch.device("meta")
    with pytest.raises(ValueError, match="asr_backend 'ctranslate2' cannot decode this checkpoint's Whisper: it runs on "
                                         "the CPU only, not meta"):
        elsewhere._load_asr()
