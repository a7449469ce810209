"""The cascade's Whisper decoding run by CTranslate2: the same transcripts as transformers' ``generate``, faster on a CPU.

:class:`Ct2Whisper` keeps the checkpoint's own Whisper encoder in torch (the call transformers' ``generate`` makes,
so the decoder reads the very same encoder states) and hands the greedy, autoregressive decoding to
``ctranslate2.models.Whisper``, built from the checkpoint's own weights when it is first needed
(``assets.ct2_convert.write_whisper_ct2``, through a temporary folder; float32 weights, computed in float32).
Nothing is written into the checkpoint, so nothing can go stale, and trained or merged weights are the ones used.

It repeats, step for step, what transformers does in ``assets.ct2_whisper.transcribe`` (the cascade) and in
``inference.subtitles`` (timed segments): the same log-mel features, the same prompt tokens, greedy decoding with the
same suppressed tokens and the same per-window token cap, and transformers' sequential decoding (windows of up to
30 s, each starting where the previous one's last complete segment ended; timestamps on for long audio and for
subtitles, greedy, no temperature fallback, no conditioning on the previous window). The transcripts and segments
are the same (tests/test_ct2_asr.py). The decoder loop is where transformers spends its time on a CPU (about 1.4x
faster here on examples/news_2min.wav, one thread each); the encoder costs the same in both, so it stays in torch.

:func:`unavailable` says why a checkpoint's Whisper cannot run this way (no ctranslate2, a multilingual Whisper
whose language is left to detection, ...), or None; the cascade then uses transformers' Whisper, the reference.
"""

from __future__ import annotations

import tempfile

import numpy as np
import torch

BACKEND = "ctranslate2"
REFERENCE = "transformers"
_TIME_PRECISION = 0.02  # seconds per timestamp token
_FEATURE_SECONDS = 0.01  # seconds per mel frame (hop 160 at 16 kHz)


def unavailable(asr) -> str | None:
    """Why :class:`Ct2Whisper` cannot run this ASR model (one line), or None."""
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        return "ctranslate2 is not installed"
    if getattr(asr.config, "model_type", None) != "whisper":
        return f"the ASR model is {getattr(asr.config, 'model_type', None)!r}, not Whisper"
    gen, vocab = asr.generation_config, asr.config.vocab_size
    ids = [getattr(gen, name, None) for name in ("decoder_start_token_id", "eos_token_id", "no_timestamps_token_id")]
    if any(not isinstance(i, int) or not 0 <= i < vocab for i in ids) or not ids[0] < ids[2]:
        return "its generation config lacks Whisper's control tokens (start, end, <|notimestamps|>) in their order"
    prompt = _init_tokens(gen)
    if prompt is None:
        return "a multilingual Whisper whose language is left to detection"
    if not all(ids[0] <= t <= ids[2] for t in prompt):  # CTranslate2 reads its prompt's task tokens so
        return "its prompt tokens do not lie between <|startoftranscript|> and <|notimestamps|>"
    return None


def _init_tokens(gen) -> list[int] | None:
    """The tokens transformers starts every window with (``<|notimestamps|>`` aside), or None where it would detect
    the language (which this path does not repeat)."""
    tokens = [int(gen.decoder_start_token_id)]
    if not getattr(gen, "is_multilingual", False):
        return tokens
    language, task = getattr(gen, "language", None), getattr(gen, "task", None) or "transcribe"
    lang_to_id, task_to_id = getattr(gen, "lang_to_id", None) or {}, getattr(gen, "task_to_id", None) or {}
    token = language if language and language.startswith("<|") else f"<|{language}|>"
    if language is None or token not in lang_to_id or task not in task_to_id:
        return None
    return tokens + [int(lang_to_id[token]), int(task_to_id[task])]


class Ct2Whisper:
    """``asr`` (a transformers Whisper: its encoder runs in torch, its decoder in CTranslate2 on the CPU with
    ``threads`` threads) and its ``processor`` (feature extractor and tokenizer)."""

    def __init__(self, asr, processor, threads: int = 1):
        import ctranslate2

        from ..assets.ct2_convert import write_whisper_ct2

        self.asr, self.gen = asr, asr.generation_config
        self.feature_extractor, self.tokenizer = processor.feature_extractor, processor.tokenizer
        # written to a temporary folder one weight at a time and read back whole: the weights are in memory once more
        # (CTranslate2's float32 copy), never twice (in-memory files would be)
        with tempfile.TemporaryDirectory(prefix="audio-minichat-ct2-") as folder:
            self.model = ctranslate2.models.Whisper(str(write_whisper_ct2(asr, processor.tokenizer, folder)), device="cpu",
                                                    compute_type="float32", intra_threads=threads)
        gen = self.gen
        self.init_tokens = _init_tokens(gen)
        self.no_timestamps = int(gen.no_timestamps_token_id)
        self.timestamp_begin = self.no_timestamps + 1
        self.first_special = min(int(gen.eos_token_id), int(gen.decoder_start_token_id))  # text ids lie below
        self.suppress = [int(t) for t in gen.suppress_tokens or [] if 0 <= int(t) < asr.config.vocab_size]
        initial = getattr(gen, "max_initial_timestamp_index", None)
        self.max_initial_timestamp = 10**6 if initial is None else int(initial)
        self.max_target_positions = int(asr.config.max_target_positions)
        self.window_frames = self.feature_extractor.nb_max_frames  # mel frames per 30 s window
        self.input_stride = asr.model.encoder.conv1.stride[0] * asr.model.encoder.conv2.stride[0]

    # ---- one window --------------------------------------------------------------------------------
    def _decode(self, features: np.ndarray, prompt: list[int], max_new_tokens: int) -> list[int]:
        """Greedy decoding of one window's features (mel bins, frames) after ``prompt``: the new tokens, end token
        excluded, at most ``max_new_tokens``."""
        import ctranslate2

        asr = self.asr
        with torch.inference_mode():  # the encoder call transformers' generate makes
            inputs = torch.from_numpy(np.ascontiguousarray(features[None])).to(device=asr.device, dtype=asr.dtype)
            encoded = asr.model.encoder(inputs).last_hidden_state.float().cpu().numpy()
        # CTranslate2 writes at most min(max_length // 2, max_length - len(prompt) + 1) new tokens
        max_length = max(2 * max_new_tokens, max_new_tokens + len(prompt) - 1)
        result = self.model.generate(ctranslate2.StorageView.from_array(encoded), [prompt], beam_size=1,
                                     max_length=max_length, suppress_tokens=self.suppress, suppress_blank=True,
                                     max_initial_timestamp_index=self.max_initial_timestamp)
        return [int(t) for t in result[0].sequences_ids[0]]

    # ---- the cascade's transcript ----------------------------------------------------------------------
    def transcribe(self, audio: np.ndarray) -> str:
        """The transcript (stripped) that ``assets.ct2_whisper.transcribe`` gives with this model (the generation
        config's ``max_length`` caps each window, as there)."""
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1 or audio.size == 0:
            raise ValueError(f"transcribe expects non-empty 1-D 16 kHz mono audio, got shape {audio.shape}")
        # up to one window: padded to 30 s, <|notimestamps|> (timestamps the model writes anyway still cut segments,
        # as in transformers); longer: timestamps
        prompt = self.init_tokens + ([self.no_timestamps] if audio.size <= self.feature_extractor.n_samples else [])
        ids = [t for segment in self._sequential(self._features(audio), prompt, None) for t in segment["tokens"]]
        return self.tokenizer.decode([t for t in ids if t < self.first_special], skip_special_tokens=True).strip()

    # ---- timed segments (inference.subtitles) ----------------------------------------------------------
    def segments(self, clip: np.ndarray, max_new_tokens: int) -> list[dict]:
        """transformers' ``generate(..., return_timestamps=True, return_segments=True, max_new_tokens=...)``
        segments of a clip: ``[{"start", "end", "tokens"}]`` (seconds in the clip, token ids)."""
        return self._sequential(self._features(clip), list(self.init_tokens), max_new_tokens)

    def _features(self, audio: np.ndarray) -> np.ndarray:
        """The log-mel features transformers decodes: up to 30 s, padded to the window; longer, all of them."""
        fe = self.feature_extractor
        if audio.size <= fe.n_samples:
            return fe(audio, sampling_rate=fe.sampling_rate, return_tensors="np")["input_features"][0]
        return fe(audio, sampling_rate=fe.sampling_rate, return_tensors="np", truncation=False,
                  padding="longest")["input_features"][0]

    # ---- transformers' sequential decoding ---------------------------------------------------------------
    def _sequential(self, features: np.ndarray, prompt: list[int], max_new_tokens: int | None) -> list[dict]:
        """Every segment, in order: windows of up to 30 s (zero-padded features) from ``seek``, each moving ``seek``
        to its last complete segment's end (or past the window). Each window's cap: ``max_new_tokens``, or where
        None, the generation config's ``max_length``, which transformers raises by the prompt's length at every
        window (capped at the decoder's positions)."""
        total, seek, segments = features.shape[-1], 0, []
        max_length = int(self.gen.max_length)
        while seek < total:
            frames = min(total - seek, self.window_frames)
            window = np.zeros((features.shape[0], self.window_frames), dtype=np.float32)
            window[:, :frames] = features[:, seek : seek + frames]
            if max_new_tokens is None:
                max_length = min(max_length + len(prompt), self.max_target_positions)
                cap = max_length - len(prompt)
            else:
                cap = min(max_new_tokens, self.max_target_positions - len(prompt))
            found, advance = self._split(self._decode(window, prompt, cap), seek, frames)
            segments += found
            seek += advance if advance > 0 else frames  # (0: a pair at <|0.00|>, on which transformers never ends)
        return segments

    def _split(self, sequence: list[int], seek: int, frames: int) -> tuple[list[dict], int]:
        """A window's segments (transformers' ``_retrieve_segment``: a pair of timestamps ends one) and how many mel
        frames to move on: to the last pair's time, or the whole window where decoding ended with one timestamp or
        wrote no pair."""
        begin = self.timestamp_begin
        offset = seek * _TIME_PRECISION / self.input_stride  # (float64, in transformers' order of operations)
        is_time = [t >= begin for t in sequence]
        single_ending = is_time[-2:] == [False, True]
        cuts = [i + 1 for i in range(len(sequence) - 1) if is_time[i] and is_time[i + 1]]
        if not cuts:
            stamps = [t for t in sequence if t >= begin]
            last = int(torch.tensor(frames) * _FEATURE_SECONDS / _TIME_PRECISION)  # (in float32, as transformers)
            if stamps and stamps[-1] != begin:
                last = stamps[-1] - begin
            return [{"start": offset, "end": offset + last * _TIME_PRECISION, "tokens": sequence}], frames
        if single_ending:
            cuts.append(len(sequence))
        else:
            cuts[-1] += 1  # the last segment keeps its closing timestamp
        segments, start = [], 0
        for i, cut in enumerate(cuts):
            piece = sequence[start:cut]
            close = piece[-1] if i < len(cuts) - 1 or single_ending else piece[-2]
            segments.append({"start": offset + (piece[0] - begin) * _TIME_PRECISION,
                             "end": offset + (close - begin) * _TIME_PRECISION, "tokens": piece})
            start = cut
        if single_ending:
            return segments, frames
        return segments, (sequence[start - 2] - begin) * self.input_stride


__all__ = ["Ct2Whisper", "BACKEND", "REFERENCE", "unavailable"]
