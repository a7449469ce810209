"""Word spans for ``downsample="ctc_pool"``: per row, a list of ``[start_s, end_s]`` (one per spoken word).

Chosen by the data config's ``word_spans`` (off by default)::

    word_spans: null                          # off: the build writes exactly what it wrote before
    word_spans: whisper                       # forced alignment with the offline Whisper tiny.en
    word_spans: {source: whisper, model: whisper-tiny.en, batch_size: 8, threads: null, device: cpu}
    word_spans: {source: ctc, model: path/to/a/Wav2Vec2ForCTC-or-HubertForCTC-dir}

``whisper`` -- forced alignment of the row's known transcript against Whisper's decoder cross-attention, the
method of OpenAI Whisper's word timestamps (``timing.find_alignment``) with the transcript in place of a decoded
one: the transcript (each whitespace word tokenized as ``" " + word``) is teacher-forced after
``<|startoftranscript|>[<|en|><|transcribe|>]<|notimestamps|>``; the cross-attention of the checkpoint's
``alignment_heads`` (the converted tiny.en keeps CTranslate2's, OpenAI's 8 heads; a checkpoint without them
uses every head of the upper half of the decoder layers, OpenAI's fallback) is renormalized over the clip's own
encoder frames (20 ms each), z-scored over the tokens, median-filtered over time (width 7) and averaged over
the heads; dynamic time warping of the negated matrix gives each token the frame where the path enters its row,
a word starts where its first token does and ends where the next word (or end-of-text) starts (OpenAI's
``jump_times``); every span is at least one 20 ms frame (boundaries pushed apart, inside the clip), then shrunk
to its first..last 20 ms frame within 40 dB of the clip's loudest (the path always starts at frame 0, so the
first word would otherwise take the leading silence, and a word the pause after it). Words without a letter or
digit (``-``, ``&``) join a neighbouring word. The transcript is known, so there are no recognition errors and
exactly one span per word with a letter or digit. Clips over 30 s (one Whisper window) get the whole-clip
fallback. Measured on espeak-ng words with known positions (94 words, 2 voices, 80 ms pauses): 81 spans
have their centre inside their word; starts are 0.06 s late on average, ends 0.12 s (tiny.en's attention is
coarse); about 0.6 s per clip on one CPU core (the 30 s encoder window dominates), ``device: cuda`` for more.

``ctc`` -- greedy CTC decoding (``AutoModelForCTC``): the frame-wise argmax; a word is a run of frames whose
token is a character, ended by a word-delimiter frame (blank frames inside a word do not end it); it spans
``[first frame * s, (last frame + 1) * s]`` with ``s = inputs_to_logits_ratio / sampling_rate``
(the same timing as the tokenizers' ``output_word_offsets``). The transcript is not used.

Every span list is checked (inside ``[0, clip duration]``, each span non-empty, ordered and non-overlapping,
times rounded to milliseconds); a row without a valid span gets one span covering the whole clip, counted in
``report.json["word_spans"]["whole_clip"]`` by reason. The stage is deterministic (greedy, eval mode, fixed
batches per shard) and resumable like the others: ``OUT/shards/shard-XXXXX/spans/`` (``spans.jsonl`` +
``meta.json``), committed atomically after synthesis; a stage written under another ``word_spans`` config is
redone. Turning ``word_spans`` on for a finished build computes only the spans and re-assembles.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..audio_spans import check_spans
from .shards import _shard_dir, shard_stage

SOURCES = ("whisper", "ctc")
DEFAULT_WHISPER = "whisper-tiny.en"
COLUMN = "word_spans"
MIN_SPAN_S = 0.02  # one Whisper encoder frame: no span is shorter
SILENCE_DB = 40.0  # frames this far below the clip's loudest 20 ms frame count as silence (whisper ends)
MEDIAN_WIDTH = 7
SPANS_VERSION = 1
_OPTIONS = {"source", "model", "batch_size", "threads", "device"}


# ------------------------------------------------------------------------------------------------ config


def span_config(raw) -> Optional[dict]:
    """The data config's ``word_spans`` value -> None (off) or a full dict (source, model, batch_size, ...)."""
    if raw is None or raw is False or (isinstance(raw, str) and raw.strip().lower() in ("", "none", "null", "off")):
        return None
    if isinstance(raw, str):
        raw = {"source": raw}
    if not isinstance(raw, dict):
        raise ValueError(f"word_spans must be null, 'whisper', 'ctc' or a mapping; got {raw!r}")
    unknown = set(raw) - _OPTIONS
    if unknown:
        raise ValueError(f"unknown word_spans keys {sorted(unknown)}; expected some of {sorted(_OPTIONS)}")
    source = str(raw.get("source", "")).strip().lower()
    if source not in SOURCES:
        raise ValueError(f"word_spans.source must be one of {SOURCES}; got {raw.get('source')!r}")
    model = raw.get("model") or (DEFAULT_WHISPER if source == "whisper" else None)
    if not model:
        raise ValueError("word_spans.source 'ctc' needs word_spans.model: a CTC model directory "
                         "(Wav2Vec2ForCTC / HubertForCTC, AutoModelForCTC.from_pretrained) with its tokenizer")
    return {"source": source, "model": str(model), "batch_size": max(1, int(raw.get("batch_size") or 8)),
            "threads": raw.get("threads"), "device": str(raw.get("device") or "cpu")}


def spans_key(scfg: dict) -> str:
    """What the spans depend on (not threads or device): a stage with another key is redone."""
    keep = {"version": SPANS_VERSION, "source": scfg["source"], "model": scfg["model"], "batch_size": scfg["batch_size"]}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------ arithmetic


def ctc_word_spans(frame_ids: Sequence[int], blank_id: int, delimiter_id: Optional[int], seconds_per_frame: float,
                   ignore_ids: Sequence[int] = ()) -> list[list[float]]:
    """Greedy CTC frame tokens -> word spans in seconds: a word is the run of character frames between
    delimiter frames (blank and ignored frames neither end nor extend it)."""
    spans: list[list[float]] = []
    first = last = None
    skip = set(ignore_ids) | {blank_id}
    for t, tok in enumerate(frame_ids):
        if tok == delimiter_id:
            if first is not None:
                spans.append([first * seconds_per_frame, (last + 1) * seconds_per_frame])
            first = last = None
        elif tok not in skip:
            first = t if first is None else first
            last = t
    if first is not None:
        spans.append([first * seconds_per_frame, (last + 1) * seconds_per_frame])
    return spans


def dtw_path(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Monotone alignment of ``cost`` (rows x cols) from (0, 0) to the last cell, steps right, down or diagonal,
    minimal summed cost; ties prefer the diagonal, then down. Returns (row indices, col indices) along the path."""
    rows, cols = cost.shape
    acc = np.full((rows + 1, cols + 1), np.inf)
    acc[0, 0] = 0.0
    step = np.zeros((rows + 1, cols + 1), dtype=np.int8)  # 0 diagonal, 1 down (from above), 2 right (from the left)
    values = cost.tolist()
    for i in range(1, rows + 1):
        above, here, row, moves = acc[i - 1].tolist(), acc[i], values[i - 1], step[i]
        left = math.inf
        for j in range(1, cols + 1):
            diag, up = above[j - 1], above[j]
            if diag <= up and diag <= left:
                best, move = diag, 0
            elif up <= left:
                best, move = up, 1
            else:
                best, move = left, 2
            left = row[j - 1] + best
            here[j] = left
            moves[j] = move
    i, j, path = rows, cols, []
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        move = step[i, j]
        i, j = (i - 1, j - 1) if move == 0 else ((i - 1, j) if move == 1 else (i, j - 1))
    path.reverse()
    arr = np.asarray(path, dtype=np.int64)
    return arr[:, 0], arr[:, 1]


def median_filter(x: np.ndarray, width: int = MEDIAN_WIDTH) -> np.ndarray:
    """Median over a centred window along the last axis, edges reflected (as OpenAI Whisper filters)."""
    half = width // 2
    if width <= 1 or x.shape[-1] <= half:
        return x
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(half, half)], mode="reflect")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, width, axis=-1), axis=-1)


def loud_frames(audio: np.ndarray, rate: int, frame_s: float = MIN_SPAN_S, db: float = SILENCE_DB) -> np.ndarray:
    """Per ``frame_s`` frame of ``audio``: whether its RMS is within ``db`` of the loudest frame's."""
    hop = max(1, int(round(frame_s * rate)))
    n = int(math.ceil(audio.size / hop))
    frames = np.zeros(n * hop, dtype=np.float64)
    frames[: audio.size] = audio
    rms = np.sqrt((frames.reshape(n, hop) ** 2).mean(axis=1))
    return rms >= rms.max() * 10.0 ** (-db / 20.0) if n and rms.max() > 0 else np.zeros(n, dtype=bool)


def trim_silence(spans: list[list[float]], loud: np.ndarray, frame_s: float = MIN_SPAN_S) -> list[list[float]]:
    """Shrink each span to its first..last loud frame (a span without one stays as it is)."""
    out = []
    for start, end in spans:
        lo, hi = int(math.floor(start / frame_s + 1e-9)), int(math.ceil(end / frame_s - 1e-9))
        hits = np.nonzero(loud[lo:hi])[0]
        if hits.size:
            start, end = max(start, float(lo + hits[0]) * frame_s), min(end, float(lo + hits[-1] + 1) * frame_s)
        out.append([start, end])
    return out


def spread_boundaries(bounds: Sequence[float], duration: float, min_width: float = MIN_SPAN_S) -> Optional[list[float]]:
    """Contiguous word boundaries b0 <= b1 <= ... -> the nearest ones inside [0, duration] with every gap at least
    ``min_width`` (pushed right, then pulled back from the end); None when the words do not fit."""
    b = [min(max(float(x), 0.0), duration) for x in bounds]
    for i in range(1, len(b)):
        b[i] = max(b[i], b[i - 1] + min_width)
    b[-1] = min(b[-1], duration)
    for i in range(len(b) - 2, -1, -1):
        b[i] = min(b[i], b[i + 1] - min_width)
    return b if b[0] >= 0.0 else None


def finish_spans(spans, duration: float) -> tuple[list[list[float]], Optional[str], str]:
    """An aligner's spans (or its reason for having none) -> (spans rounded to ms and clipped to the clip, None,
    "") or, when no valid span remains, (one span covering the whole clip, the reason, a detail)."""
    last = math.floor(duration * 1000.0) / 1000.0
    whole = [[0.0, max(last, 0.001)]]
    if isinstance(spans, str):
        return whole, spans, ""
    out = []
    for start, end in spans or []:
        start, end = round(max(0.0, float(start)), 3), round(min(float(end), last), 3)
        if end > start:
            out.append([start, end])
    if not out:
        return whole, "no_words", ""
    problem = check_spans(out, last)
    return (whole, "invalid_spans", problem) if problem else (out, None, "")


# ------------------------------------------------------------------------------------------------ aligners


class WhisperWordAligner:
    """Forced alignment of known transcripts with a transformers Whisper checkpoint (see the module doc)."""

    frame_s = 0.02  # encoder frame: 2 x the 10 ms mel hop

    def __init__(self, scfg: dict):
        import torch
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        from ..assets.offline import resolve_pretrained

        self.path = resolve_pretrained(scfg["model"])
        self.device = torch.device(scfg.get("device") or "cpu")
        self.model = WhisperForConditionalGeneration.from_pretrained(self.path, dtype=torch.float32).to(self.device).eval()
        self.encoder_attention = self.model.config._attn_implementation
        proc = WhisperProcessor.from_pretrained(self.path)
        self.features, self.tokenizer = proc.feature_extractor, proc.tokenizer
        self.batch_size = int(scfg.get("batch_size", 8))
        gen, cfg = self.model.generation_config, self.model.config
        heads = getattr(gen, "alignment_heads", None)
        if not heads:  # OpenAI's default: every head of the upper half of the decoder layers
            heads = [[layer, h] for layer in range(cfg.decoder_layers // 2, cfg.decoder_layers)
                     for h in range(cfg.decoder_attention_heads)]
        self.heads = [(int(a), int(b)) for a, b in heads]
        prefix = [int(gen.decoder_start_token_id)]
        if getattr(gen, "is_multilingual", False):
            prefix += [int(gen.lang_to_id["<|en|>"]), int(gen.task_to_id["transcribe"])]
        self.prefix = prefix + [int(gen.no_timestamps_token_id)]
        self.eot = int(gen.eos_token_id if not isinstance(gen.eos_token_id, list) else gen.eos_token_id[0])
        self.max_tokens = int(cfg.max_target_positions)
        self.window = int(self.features.n_samples)  # samples in one 30 s window
        self.rate = int(self.features.sampling_rate)

    def word_tokens(self, transcript: str) -> tuple[list[int], list[int]]:
        """Transcript -> (token ids, index of each word's first token); words without a letter or digit
        join the word before (or after, at the start)."""
        ids: list[int] = []
        starts: list[int] = []
        for word in transcript.split():
            if any(ch.isalnum() for ch in word):
                starts.append(len(ids) if starts else 0)
            ids += self.tokenizer.encode(" " + word, add_special_tokens=False)
        return ids, starts

    def __call__(self, items: list[tuple[np.ndarray, str]]) -> list:
        """[(16 kHz audio, transcript)] -> per item, a list of [start_s, end_s] or a reason string."""
        results: list = [None] * len(items)
        todo = []
        for i, (audio, text) in enumerate(items):
            ids, starts = self.word_tokens(text)
            if not starts:
                results[i] = "no_words"
            elif audio.size > self.window:
                results[i] = "too_long_for_whisper"
            elif len(self.prefix) + len(ids) + 1 > self.max_tokens:
                results[i] = "too_many_tokens"
            else:
                todo.append((i, ids, starts))
        for b in range(0, len(todo), self.batch_size):
            batch = todo[b:b + self.batch_size]
            for (i, _, _), spans in zip(batch, self._align([(items[i][0], ids, starts) for i, ids, starts in batch])):
                results[i] = spans
        return results

    def _align(self, batch: list[tuple[np.ndarray, list[int], list[int]]]) -> list:
        import torch

        feats = self.features([a for a, _, _ in batch], sampling_rate=self.rate, return_tensors="pt").input_features
        seqs = [self.prefix + ids + [self.eot] for _, ids, _ in batch]
        longest = max(len(s) for s in seqs)
        dec = torch.tensor([s + [self.eot] * (longest - len(s)) for s in seqs], dtype=torch.long)
        whisper = self.model.model
        with torch.inference_mode():  # the encoder with SDPA (2x faster), the decoder eager for its attention maps
            states = whisper.encoder(feats.to(self.device)).last_hidden_state
            self.model.set_attn_implementation("eager")
            try:
                out = whisper.decoder(input_ids=dec.to(self.device), encoder_hidden_states=states,
                                      output_attentions=True, use_cache=False)
            finally:
                self.model.set_attn_implementation(self.encoder_attention)
        cross = [c.float().cpu() for c in out.cross_attentions]  # per layer: (batch, heads, tokens, 1500)
        results = []
        for k, (audio, ids, starts) in enumerate(batch):
            n_frames = max(1, min(cross[0].shape[-1], int(math.ceil(audio.size / (self.frame_s * self.rate)))))
            weights = torch.stack([cross[layer][k, h, : len(seqs[k]), :n_frames] for layer, h in self.heads]).double()
            weights = weights / weights.sum(-1, keepdim=True).clamp_min(1e-12)  # softmax over the clip's frames only
            std, mean = torch.std_mean(weights, dim=-2, keepdim=True, unbiased=False)
            weights = ((weights - mean) / std.clamp_min(1e-12)).numpy()
            matrix = median_filter(weights).mean(axis=0)
            # rows predicting the transcript tokens and end-of-text (inputs <|notimestamps|> .. the last token)
            matrix = matrix[len(self.prefix) - 1 : len(self.prefix) + len(ids)]
            rows, cols = dtw_path(-matrix)
            enter = np.full(len(ids) + 1, -1, dtype=np.int64)
            for r, c in zip(rows.tolist(), cols.tolist()):
                if enter[r] < 0:
                    enter[r] = c
            bounds = [enter[s] * self.frame_s for s in starts] + [enter[len(ids)] * self.frame_s]
            bounds = spread_boundaries(bounds, audio.size / self.rate)
            if bounds is None:
                results.append("too_many_words")
                continue
            spans = [[a, b] for a, b in zip(bounds[:-1], bounds[1:])]
            results.append(trim_silence(spans, loud_frames(audio, self.rate, self.frame_s), self.frame_s))
        return results


class CtcWordAligner:
    """Word spans from greedy CTC decoding with a transformers CTC model (see the module doc)."""

    def __init__(self, scfg: dict):
        import torch
        from transformers import AutoFeatureExtractor, AutoModelForCTC, AutoTokenizer

        self.path = scfg["model"]
        if not Path(self.path).is_dir():
            raise FileNotFoundError(f"word_spans.model {self.path!r} is not a directory (a CTC model saved with save_pretrained)")
        self.device = torch.device(scfg.get("device") or "cpu")
        self.model = AutoModelForCTC.from_pretrained(self.path).to(self.device).eval()
        self.features = AutoFeatureExtractor.from_pretrained(self.path)
        tok = AutoTokenizer.from_pretrained(self.path)
        cfg = self.model.config
        self.blank = int(cfg.pad_token_id if cfg.pad_token_id is not None else tok.pad_token_id)
        delim = getattr(tok, "word_delimiter_token_id", None)
        self.delimiter = int(delim) if delim is not None else tok.convert_tokens_to_ids("|")
        self.ignore = [int(t) for t in (tok.bos_token_id, tok.eos_token_id) if t is not None]
        ratio = getattr(cfg, "inputs_to_logits_ratio", None) or math.prod(cfg.conv_stride)
        self.rate = int(self.features.sampling_rate)
        if self.rate != 16000:
            raise ValueError(f"{self.path}: the CTC model's feature extractor expects {self.rate} Hz; the build's audio is 16 kHz")
        self.seconds_per_frame = float(ratio) / self.rate

    @staticmethod
    def frame_ids(logits) -> list[int]:
        """(frames, vocab) logits -> the greedy token of each frame."""
        return logits.argmax(-1).tolist()

    def __call__(self, items: list[tuple[np.ndarray, str]]) -> list:
        import torch

        results = []
        for audio, _ in items:  # one clip at a time: padding would change group-norm encoders
            inputs = self.features(audio, sampling_rate=self.rate, return_tensors="pt")
            with torch.inference_mode():
                logits = self.model(inputs.input_values.to(self.device)).logits[0].float().cpu()
            spans = ctc_word_spans(self.frame_ids(logits), self.blank, self.delimiter, self.seconds_per_frame, self.ignore)
            results.append(spans or "no_words")
        return results


def make_aligner(scfg: dict):
    if scfg.get("threads"):
        import torch

        torch.set_num_threads(int(scfg["threads"]))
    return (WhisperWordAligner if scfg["source"] == "whisper" else CtcWordAligner)(scfg)


# ------------------------------------------------------------------------------------------------ the stage


def _stage_done(out: Path, k: int, key: str) -> bool:
    meta = _shard_dir(out, k) / "spans" / "meta.json"
    return meta.exists() and json.loads(meta.read_text()).get("key") == key


def run_word_spans(cfg: dict, out: Path, shards: list[list[dict]]) -> float:
    """Compute the word spans of every synthesized row, one committed shard stage (``spans/``) at a time."""
    scfg = span_config(cfg.get("word_spans"))
    if scfg is None:
        return 0.0
    from datasets import Audio, load_from_disk
    from tqdm.auto import tqdm

    from .synthesis import SAMPLE_RATE, _decode_audio_bytes

    key = spans_key(scfg)
    todo = [k for k in range(len(shards)) if (_shard_dir(out, k) / "synth").exists() and not _stage_done(out, k, key)]
    if not todo:
        return 0.0
    t0 = time.perf_counter()
    aligner = make_aligner(scfg)
    bar = tqdm(total=len(todo), desc="word spans", unit="shard", dynamic_ncols=True)
    try:
        for k in todo:
            synth = _shard_dir(out, k) / "synth"
            lines = []
            if (synth / "data").exists():
                ds = load_from_disk(str(synth / "data")).cast_column("audio", Audio(sampling_rate=SAMPLE_RATE, decode=False))
                step = int(scfg["batch_size"])
                for b in range(0, len(ds), step):
                    part = ds[b:b + step]
                    items = [(_decode_audio_bytes(a), t) for a, t in zip(part["audio"], part["transcript"])]
                    for rid, (audio, _), raw in zip(part["id"], items, aligner(items)):
                        spans, fallback, detail = finish_spans(raw, audio.size / SAMPLE_RATE)
                        rec = {"id": rid, COLUMN: spans, "whole_clip": fallback}
                        lines.append(json.dumps({**rec, "detail": detail} if detail else rec))
            with shard_stage(_shard_dir(out, k), "spans") as tmp:
                (tmp / "spans.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
                (tmp / "meta.json").write_text(json.dumps({"key": key, "config": scfg, "resolved_model": aligner.path}))
            bar.update(1)
    finally:
        bar.close()
    return time.perf_counter() - t0


def read_word_spans(out: Path, k: int) -> list[dict]:
    path = _shard_dir(out, k) / "spans" / "spans.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def word_spans_report(cfg: dict, out: Path, n_shards: int, kept_ids: set) -> Optional[dict]:
    """report.json's ``word_spans``: rows and spans in the final data set, whole-clip fallbacks by reason."""
    scfg = span_config(cfg.get("word_spans"))
    if scfg is None:
        return None
    rows = spans = 0
    reasons: dict[str, int] = {}
    examples = []
    for k in range(n_shards):
        if not (_shard_dir(out, k) / "spans").exists():
            continue
        for rec in read_word_spans(out, k):
            if rec["id"] not in kept_ids:
                continue
            rows += 1
            spans += len(rec[COLUMN])
            if rec["whole_clip"]:
                reasons[rec["whole_clip"]] = reasons.get(rec["whole_clip"], 0) + 1
                if len(examples) < 5:
                    examples.append({"id": rec["id"], "reason": rec["whole_clip"], "detail": rec.get("detail", "")})
    return {"source": scfg["source"], "model": scfg["model"], "column": COLUMN, "rows": rows, "spans": spans,
            "whole_clip": sum(reasons.values()), "whole_clip_reasons": reasons, "whole_clip_examples": examples}


__all__ = ["span_config", "ctc_word_spans", "dtw_path", "median_filter", "spread_boundaries", "check_spans",
           "finish_spans", "WhisperWordAligner", "CtcWordAligner", "make_aligner", "run_word_spans",
           "read_word_spans", "word_spans_report", "COLUMN"]
