"""The cascade's Whisper run by CTranslate2: the same transcripts as transformers' ``generate``, faster on a CPU, and
with neither torch nor transformers imported.

:class:`Ct2Whisper` runs a folder (:func:`ensure_folder`): the checkpoint's own Whisper weights written once as a
CTranslate2 model (``assets.ct2_convert.write_whisper_ct2``; float32 weights, computed in float32), beside what the
decoding needs from the checkpoint's processor and generation config (``asr_settings.json``, the mel filters, the
tokenizer), in the model cache under a key of the checkpoint's files (path, sizes, modification times): nothing is
written into the checkpoint, and a checkpoint whose files change gets a new folder. The log-mel features are
computed here in numpy (:func:`log_mel`, transformers' computation), and CTranslate2 runs the encoder and the greedy
decoding. So a process can start transcribing before torch and transformers are imported (the CLI's cascade does:
:meth:`Ct2Whisper.prefetch`), and ``asr_s`` is the transcription alone.

It repeats, step for step, what transformers does in ``assets.ct2_whisper.transcribe`` (the cascade) and in
``inference.subtitles`` (timed segments): the same log-mel features, the same prompt tokens, greedy decoding with the
same suppressed tokens and the same per-window token cap, and transformers' sequential decoding (windows of up to
30 s, each starting where the previous one's last complete segment ended; timestamps on for long audio and for
subtitles, greedy, no temperature fallback, no conditioning on the previous window). The transcripts and segments
are the same (tests/test_ct2_asr.py). The decoder loop is where transformers spends its time on a CPU (about 1.4x
faster here on examples/news_2min.wav, one thread each); the encoder costs the same in both.

:func:`unavailable` says why a checkpoint's Whisper cannot run this way (no ctranslate2, a multilingual Whisper
whose language is left to detection, ...), or None; the cascade then uses transformers' Whisper, the reference.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from concurrent.futures import Future, wait
from pathlib import Path

import numpy as np

BACKEND = "ctranslate2"
REFERENCE = "transformers"
_TIME_PRECISION = 0.02  # seconds per timestamp token
_FEATURE_SECONDS = 0.01  # seconds per mel frame (hop 160 at 16 kHz)


SETTINGS = "asr_settings.json"  # written last: a folder with it is complete
FOLDER_VERSION = 2  # the folder's layout; a new one makes new folders (2: no_speech_threshold)


# The llama.cpp route's Whisper (inference.gguf_cascade) runs quantised where it measured faster with no more word
# errors: int8 weights (CTranslate2 quantises the float32 files as they load). Measured (scripts/whisper_compute_types.py,
# benchmarks/cpu_speed/whisper_compute_types*.json; 2 threads, the 2-minute example, cascade transcript / e2e tokens,
# float32 -> int8): Intel Xeon with AMX 4.29 / 2.93 -> 2.19 / 2.13 s (peak 805 -> 634 MiB; word errors on 20 spoken XSum
# documents 11.41 -> 10.85 %); the kernels CTranslate2 picks on AMD (CT2_USE_MKL=0: oneDNN), stood in for on the same
# Xeon with oneDNN capped at AVX-512 BF16/VNNI (a Zen 4) 5.44 / 3.39 -> 3.21 / 2.54 s (words 11.41 -> 11.10 %) and at
# AVX2 6.57 / 4.78 -> 4.30 / 3.42 s; Intel's MKL capped at AVX2 5.54 / 3.80 -> 3.13 / 2.91 s and at AVX-512 without AMX
# 4.82 / 3.11 -> 2.82 / 2.88 s. Every one of those CPUs has AVX2; a CPU without it was not measured and keeps
# float32. The transformers route's CTranslate2 Whisper stays float32: the reference.
INT8_MEASURED_FLAGS = frozenset({"avx2"})
FAST_COMPUTE_TYPE = "int8"
REFERENCE_COMPUTE_TYPE = "float32"


def fast_compute_type(flags=None, offered=None) -> str:
    """The compute type of the llama.cpp route's Whisper on this CPU (see INT8_MEASURED_FLAGS): FAST_COMPUTE_TYPE where
    CTranslate2 offers it and the processor is of the family it was measured faster on, else float32. ``flags``/``offered``: this
    machine's (utils.cpu_flags, ``ctranslate2.get_supported_compute_types("cpu")``) unless given."""
    if flags is None:
        from ..utils.cpu_flags import reported_cpu_flags

        flags = reported_cpu_flags()
    if offered is None:
        import ctranslate2

        offered = ctranslate2.get_supported_compute_types("cpu")
    return FAST_COMPUTE_TYPE if FAST_COMPUTE_TYPE in set(offered) and INT8_MEASURED_FLAGS & set(flags) else REFERENCE_COMPUTE_TYPE


# ---- the features, in numpy ----------------------------------------------------------------------------------------
def log_mel(audio: np.ndarray, mel_filters: np.ndarray, n_fft: int, hop: int, n_samples: int) -> np.ndarray:
    """Whisper's log-mel features (mel bins, frames) as transformers' feature extractor computes them: up to
    ``n_samples``, zero-padded to ``n_samples``; longer, the whole clip. A periodic Hann window, centred frames with
    reflected edges, the power spectrum (last frame dropped), ``mel_filters`` (frequency bins, mel bins), log10 of at
    least 1e-10, floored at the maximum less 8, then (x + 4) / 4."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.size <= n_samples:
        audio = np.pad(audio, (0, n_samples - audio.size))
    half = n_fft // 2
    padded = np.pad(audio, (half, half), mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:-1]
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
    power = np.abs(np.fft.rfft(frames * window, axis=-1).astype(np.complex64)) ** 2  # (frames, bins)
    mel = (power @ mel_filters.astype(np.float32)).T  # (mel bins, frames)
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


# ---- the folder CTranslate2 runs -------------------------------------------------------------------------------------
def folder_key(model_dir: str | os.PathLike) -> str:
    """The key of a checkpoint's files (resolved path, and each file's name, size and modification time): the same
    for the same files, another for a checkpoint written again."""
    root = Path(model_dir).resolve()
    parts = [str(FOLDER_VERSION), str(root)]
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = path.stat()
        parts.append(f"{path.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode("utf-8", "surrogateescape")).hexdigest()[:20]


def cached_folder(model_dir: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The complete CTranslate2 folder of ``model_dir``'s Whisper if it was written already, else None (no torch)."""
    from ..utils.io import default_cache_dir

    folder = Path(cache_dir or default_cache_dir()) / "ct2" / folder_key(model_dir)
    return folder if (folder / SETTINGS).is_file() else None


def ensure_folder(asr, processor, model_dir: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """The CTranslate2 folder of ``asr`` (the transformers Whisper loaded from ``model_dir``, with its ``processor``):
    written once (utils.io.atomic_directory: a killed run leaves no half folder in use), then reused. Writing it
    removes the folders of earlier versions of the same checkpoint (same path, other files) and killed writers'
    leftovers, so the cache holds one folder per checkpoint."""
    from ..assets.ct2_convert import write_whisper_ct2
    from ..utils.io import atomic_directory, default_cache_dir, remove_stale_temporaries

    found = cached_folder(model_dir, cache_dir)
    if found is not None:
        return found
    folder = Path(cache_dir or default_cache_dir()) / "ct2" / folder_key(model_dir)
    remove_stale_temporaries(folder.parent, folder.name, older_than=3600)
    source = str(Path(model_dir).resolve())
    with atomic_directory(folder) as tmp:
        write_whisper_ct2(asr, processor.tokenizer, tmp)
        fe, gen, tokenizer = processor.feature_extractor, asr.generation_config, processor.tokenizer
        np.save(tmp / "mel_filters.npy", np.asarray(fe.mel_filters, dtype=np.float32))
        tokenizer.backend_tokenizer.save(str(tmp / "tokenizer.json"))
        initial = getattr(gen, "max_initial_timestamp_index", None)
        settings = {
            "version": FOLDER_VERSION, "model_dir": source, "init_tokens": _init_tokens(gen),
            "no_timestamps": int(gen.no_timestamps_token_id),
            "first_special": min(int(gen.eos_token_id), int(gen.decoder_start_token_id)),
            "suppress": [int(t) for t in gen.suppress_tokens or [] if 0 <= int(t) < asr.config.vocab_size],
            "max_initial_timestamp": 10**6 if initial is None else int(initial),
            "max_target_positions": int(asr.config.max_target_positions), "max_length": int(gen.max_length),
            "window_frames": int(fe.nb_max_frames), "n_samples": int(fe.n_samples), "n_fft": int(fe.n_fft),
            "hop_length": int(fe.hop_length), "sampling_rate": int(fe.sampling_rate),
            "input_stride": int(asr.model.encoder.conv1.stride[0] * asr.model.encoder.conv2.stride[0]),
            "clean_up_tokenization_spaces": bool(getattr(tokenizer, "clean_up_tokenization_spaces", False)),
            # the speech check's vote (inference.answers.check_speech), as SpeechLLM._whisper_detector reads it
            "no_speech_threshold": getattr(gen, "no_speech_threshold", None),
        }
        (tmp / SETTINGS).write_text(json.dumps(settings), encoding="utf-8")
    for other in folder.parent.iterdir():  # earlier versions of this checkpoint
        try:
            if other != folder and json.loads((other / SETTINGS).read_text(encoding="utf-8")).get("model_dir") == source:
                shutil.rmtree(other, ignore_errors=True)
        except (OSError, ValueError):
            continue
    return folder


def _clean_up(text: str) -> str:
    """transformers' ``clean_up_tokenization`` (where the tokenizer asks for it)."""
    for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                          (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(before, after)
    return text


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
    """A CTranslate2 Whisper folder (:func:`ensure_folder`) run on the CPU with ``threads`` threads: torch and
    transformers are not imported. :meth:`from_model` makes one from a transformers Whisper."""

    def __init__(self, folder: str | os.PathLike, threads: int = 1, compute_type: str = REFERENCE_COMPUTE_TYPE):
        from tokenizers import Tokenizer

        folder = Path(folder)
        settings = json.loads((folder / SETTINGS).read_text(encoding="utf-8"))
        self.folder, self.settings = folder, settings
        self.compute_type = compute_type  # the float32 files quantised as they load where another is asked for
        self.model = self._load_model(threads)
        self.threads = self.later_threads = threads  # later_threads: what a transcription after the prefetch runs on
        self.mel_filters = np.load(folder / "mel_filters.npy", allow_pickle=False)
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.init_tokens = list(settings["init_tokens"])
        self.no_timestamps = int(settings["no_timestamps"])
        self.timestamp_begin = self.no_timestamps + 1
        self.first_special = int(settings["first_special"])  # text ids lie below
        self.suppress = list(settings["suppress"])
        self.max_initial_timestamp = int(settings["max_initial_timestamp"])
        self.max_target_positions = int(settings["max_target_positions"])
        self.max_length = int(settings["max_length"])
        self.window_frames = int(settings["window_frames"])  # mel frames per 30 s window
        self.n_samples = int(settings["n_samples"])
        self.input_stride = int(settings["input_stride"])
        self._prefetched: tuple[str, Future, threading.Event] | None = None
        self._partial: list[int] = []  # the running prefetch's text tokens so far (:meth:`follow`)
        self.last_seconds: float | None = None  # the last transcription's own time (a prefetched one's too)
        self.last_waited: float | None = None  # how long its caller waited for it (less than that when prefetched)

    @classmethod
    def from_model(cls, asr, processor, model_dir: str | os.PathLike, threads: int = 1,
                   cache_dir: str | os.PathLike | None = None) -> "Ct2Whisper":
        """``asr`` (a transformers Whisper loaded from ``model_dir``) and its ``processor``, written once into the model
        cache (:func:`ensure_folder`) and run from there."""
        return cls(ensure_folder(asr, processor, model_dir, cache_dir), threads)

    def decode_text(self, ids: list[int]) -> str:
        """The text of token ids as the checkpoint's Whisper tokenizer decodes them (special tokens skipped)."""
        text = self.tokenizer.decode([int(t) for t in ids], skip_special_tokens=True)
        return _clean_up(text) if self.settings.get("clean_up_tokenization_spaces") else text

    # ---- one window --------------------------------------------------------------------------------
    def _decode(self, features: np.ndarray, prompt: list[int], max_new_tokens: int) -> list[int]:
        """Greedy decoding of one window's features (mel bins, frames) after ``prompt``: the new tokens, end token
        excluded, at most ``max_new_tokens``. CTranslate2 runs the encoder on the features, then the decoder."""
        import ctranslate2

        # CTranslate2 writes at most min(max_length // 2, max_length - len(prompt) + 1) new tokens
        max_length = max(2 * max_new_tokens, max_new_tokens + len(prompt) - 1)
        result = self.model.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None])), [prompt],
                                     beam_size=1, max_length=max_length, suppress_tokens=self.suppress,
                                     suppress_blank=True, max_initial_timestamp_index=self.max_initial_timestamp)
        return [int(t) for t in result[0].sequences_ids[0]]

    # ---- the cascade's transcript ----------------------------------------------------------------------
    def transcribe(self, audio: np.ndarray) -> str:
        """The transcript (stripped) that ``assets.ct2_whisper.transcribe`` gives with this model (the generation
        config's ``max_length`` caps each window, as there). A clip handed to :meth:`prefetch` before is not
        transcribed again: its result is waited for."""
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1 or audio.size == 0:
            raise ValueError(f"transcribe expects non-empty 1-D 16 kHz mono audio, got shape {audio.shape}")
        start = time.perf_counter()
        if self._prefetched is not None:
            key, future, stop = self._prefetched
            self._prefetched = None
            if key == _clip_key(audio):
                text, self.last_seconds = future.result()
                self.last_waited = time.perf_counter() - start
                return text
            stop.set()  # another clip (a segment of a long one): the prefetch stops at its next window
        self._on_later_threads()
        text = self._transcribe(audio, None)
        self.last_seconds = self.last_waited = time.perf_counter() - start
        return text

    def _load_model(self, threads: int):
        import ctranslate2

        return ctranslate2.models.Whisper(str(self.folder), device="cpu", compute_type=self.compute_type, intra_threads=threads)

    def _on_later_threads(self) -> None:
        """After the prefetch, which ran on fewer threads (the caller's own was busy then): ``later_threads``."""
        if self.later_threads != self.threads:
            self.model, self.threads = self._load_model(self.later_threads), self.later_threads

    def stop_prefetch(self) -> None:
        """A prefetch no one will ask for stops at its next window."""
        if self._prefetched is not None:
            self._prefetched[2].set()
            self._prefetched = None

    def _transcribe(self, audio: np.ndarray, stop: threading.Event | None, progress=None) -> str:
        # up to one window: padded to 30 s, <|notimestamps|> (timestamps the model writes anyway still cut segments,
        # as in transformers); longer: timestamps
        prompt = self.init_tokens + ([self.no_timestamps] if audio.size <= self.n_samples else [])
        segments = self._sequential(self._features(audio), prompt, None, stop, progress)
        return self.decode_text(self._text_tokens(segments)).strip()

    def _text_tokens(self, segments: list[dict]) -> list[int]:
        return [t for segment in segments for t in segment["tokens"] if t < self.first_special]

    def start(self, audio: np.ndarray) -> None:
        """Transcribe ``audio`` in a thread (:meth:`prefetch`, on ``later_threads``) unless a prefetch of it runs."""
        audio = np.asarray(audio, dtype=np.float32)
        if self._prefetched is not None and self._prefetched[0] == _clip_key(audio):
            return
        self.stop_prefetch()
        self._on_later_threads()
        self.prefetch(audio)

    def follow(self, audio: np.ndarray, poll: float = 0.05):
        """While a prefetch of ``audio`` runs (:meth:`prefetch`): its transcript so far (stripped), each time another
        window adds to it. Yields nothing where none runs; :meth:`transcribe` then gives the whole transcript."""
        if self._prefetched is None or self._prefetched[0] != _clip_key(np.asarray(audio, dtype=np.float32)):
            return
        future, seen = self._prefetched[1], 0
        while not future.done():
            partial = self._partial
            if len(partial) > seen:
                seen = len(partial)
                yield self.decode_text(partial).strip()
            else:
                wait([future], timeout=poll)

    def prefetch(self, audio: np.ndarray) -> None:
        """Start transcribing ``audio`` in a thread now (CTranslate2 runs outside Python's lock, so the caller goes on
        importing and loading beside it); :meth:`transcribe` of the same clip waits for it, of another stops it."""
        audio = np.asarray(audio, dtype=np.float32)
        future: Future = Future()
        stop = threading.Event()

        def work():
            try:
                start = time.perf_counter()
                text = self._transcribe(audio, stop, progress)
                future.set_result((text, time.perf_counter() - start))
            except BaseException as exc:  # handed to whoever waits for it
                future.set_exception(exc)

        self._partial = []

        def progress(segments):
            self._partial = self._text_tokens(segments)

        self._prefetched = (_clip_key(audio), future, stop)
        threading.Thread(target=work, name="audio-minichat-asr-prefetch", daemon=True).start()

    # ---- the speech check (inference.answers.check_speech) ---------------------------------------------
    def no_speech_prob(self, window: np.ndarray) -> float:
        """Whisper's probability of its no-speech token after <|startoftranscript|> on one window of at most 30 s
        (SpeechLLM._no_speech_prob's number, from CTranslate2)."""
        import ctranslate2

        features = self._features(np.asarray(window, dtype=np.float32)[: self.n_samples])
        result = self.model.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None])),
                                     [self.init_tokens[:1]], beam_size=1, max_length=2, return_no_speech_prob=True)
        return float(result[0].no_speech_prob)

    # ---- timed segments (inference.subtitles) ----------------------------------------------------------
    def segments(self, clip: np.ndarray, max_new_tokens: int) -> list[dict]:
        """transformers' ``generate(..., return_timestamps=True, return_segments=True, max_new_tokens=...)``
        segments of a clip: ``[{"start", "end", "tokens"}]`` (seconds in the clip, token ids)."""
        self._on_later_threads()
        return self._sequential(self._features(clip), list(self.init_tokens), max_new_tokens)

    def _features(self, audio: np.ndarray) -> np.ndarray:
        """The log-mel features transformers decodes: up to 30 s, padded to the window; longer, all of them."""
        s = self.settings
        return log_mel(audio, self.mel_filters, s["n_fft"], s["hop_length"], self.n_samples)

    # ---- transformers' sequential decoding ---------------------------------------------------------------
    def _sequential(self, features: np.ndarray, prompt: list[int], max_new_tokens: int | None,
                    stop: threading.Event | None = None, progress=None) -> list[dict]:
        """Every segment, in order: windows of up to 30 s (zero-padded features) from ``seek``, each moving ``seek``
        to its last complete segment's end (or past the window). Each window's cap: ``max_new_tokens``, or where
        None, the generation config's ``max_length``, which transformers raises by the prompt's length at every
        window (capped at the decoder's positions)."""
        total, seek, segments = features.shape[-1], 0, []
        max_length = self.max_length
        while seek < total:
            if stop is not None and stop.is_set():
                return segments
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
            if progress is not None:  # (the segments so far, after each window)
                progress(segments)
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
            last = int(np.float32(frames) * np.float32(_FEATURE_SECONDS) / np.float32(_TIME_PRECISION))  # (float32, as transformers)
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


def _clip_key(audio: np.ndarray) -> str:
    return f"{audio.size}:" + hashlib.blake2b(np.ascontiguousarray(audio).tobytes(), digest_size=16).hexdigest()


__all__ = ["Ct2Whisper", "BACKEND", "REFERENCE", "unavailable", "fast_compute_type", "log_mel", "ensure_folder", "cached_folder", "folder_key"]
