"""The default e2e route's audio embeddings without torch (issue 26): ``audio_frontend="asr_tokens"`` with the token
mixture (frontend_asr_tokens.py, the soft cascade), computed by CTranslate2's Whisper and numpy.

The torch front end decodes each window greedily and, at every token it keeps, writes the expected LLM input
embedding of Whisper's top-k tokens at that step (softmax of their scores at the trained temperature; a token whose
text is several LLM pieces writes one embedding per piece instead), plus a trained projection of the decoder's hidden
state. CTranslate2 returns each step's scores over the whole vocabulary (``return_logits_vocab``), so the mixture is
computed here from the same scores; the hidden states it does not return, so this route runs checkpoints whose state
projection is zero (the default's is: the mixture alone is what its LLM reads). :func:`unavailable` says so of any
other checkpoint, which keeps the transformers route.

Everything else repeats the front end: the processor's windows (``AudioLayout.split_windows``, each padded to 30 s),
the decoder's prompt and suppressed tokens, the per-window slot budget (``ceil(seconds x audio_tokens_per_second) + 1``:
decoding stops before the token whose pieces would not fit), the token map and temperature from the checkpoint's
weights (read from its safetensors file in place: utils.safetensors_view; of the 113 MB embedding table only the rows
looked up are read). The slots a window leaves empty are masked out of the model's attention and positions, so the
LLM here reads the filled ones only. Equal token ids and embeddings within float tolerance: tests/test_gguf_route.py.
"""

from __future__ import annotations

import functools
import json
import os
import time
from pathlib import Path

import numpy as np

from ..frontend_asr_tokens_config import AsrTokensConfig
from ..frontend_config import AudioLayout
from ..utils.safetensors_view import INDEX, tensor_shapes, tensor_view, weights_files

FRONTEND = "audio_frontend."
TOKEN_MAP = FRONTEND + "asr_token_map"
TEMPERATURE = FRONTEND + "projector.log_temperature"
STATE_PROJECTION = FRONTEND + "projector.net."
# windows decoded side by side: CTranslate2 returns every step's scores over the whole vocabulary (200 KB a step, ~90
# steps a window), so a long recording is decoded 4 windows (2 minutes) at a time
WINDOW_BATCH = 4


def _processor_config(model_dir: Path) -> dict:
    path = model_dir / "processor_config.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def embedding_table_name(model_dir: str | os.PathLike) -> str | None:
    """The name of the LLM's input embedding table among the checkpoint's tensors: the one under ``language_model.``
    shaped (vocabulary, hidden size) whose name says ``embed``; None where there is not exactly one."""
    model_dir = Path(model_dir)
    text = json.loads((model_dir / "config.json").read_text(encoding="utf-8")).get("text_config") or {}
    shape = [text.get("vocab_size"), text.get("hidden_size")]
    found = [k for k, v in tensor_shapes(model_dir).items() if k.startswith("language_model.") and "embed" in k and v == shape]
    return found[0] if len(found) == 1 else None


def unavailable(model_dir: str | os.PathLike, whisper_folder: str | os.PathLike | None) -> str | None:
    """Why :class:`SoftTokens` cannot compute this checkpoint's e2e embeddings (one line), or None. Read once per
    process for the same files (the route's choice and SoftTokens' own guard ask alike): a checkpoint or Whisper
    folder rewritten since (another modification time or size) is read again."""
    model_dir = Path(model_dir)
    try:
        weights = weights_files(model_dir)
    except (OSError, ValueError, KeyError):  # an unreadable index: the check below says so
        weights = [model_dir / INDEX]
    watched = [model_dir / "processor_config.json", *weights]
    if whisper_folder is not None:
        watched.append(Path(whisper_folder) / "tokenizer.json")
    stamps = tuple(_stamp(path) for path in watched)
    return _unavailable(str(model_dir), None if whisper_folder is None else str(whisper_folder), stamps)


def _stamp(path: Path) -> tuple[int, int] | None:
    """(modification time, size) of a file, None where it is missing."""
    try:
        found = path.stat()
    except FileNotFoundError:
        return None
    return found.st_mtime_ns, found.st_size


@functools.lru_cache(maxsize=8)
def _unavailable(model_dir: str, whisper_folder: str | None, stamps: tuple) -> str | None:
    model_dir = Path(model_dir)
    processor = _processor_config(model_dir)
    if processor.get("audio_frontend") != AsrTokensConfig.name:
        return f"its e2e front end is {processor.get('audio_frontend')!r}; this route computes {AsrTokensConfig.name!r} only"
    try:
        _, options = read_front_end(model_dir)
    except (KeyError, TypeError, ValueError) as exc:
        return f"its processor_config.json is of an older layout ({exc})"
    if options.asr_token_mixture < 1:
        return "its e2e embeddings are the decoder states' projection alone (no token mixture)"
    if not options.asr_prompt_ids or options.asr_eos_token_id is None:
        return "its front end does not say how Whisper is prompted (asr_prompt_ids, asr_eos_token_id)"
    if whisper_folder is None:
        return "the checkpoint's CTranslate2 Whisper folder is not written yet (the first cascade writes it)"
    from tokenizers import Tokenizer

    blank = Tokenizer.from_file(str(Path(whisper_folder) / "tokenizer.json")).token_to_id("\u0120")
    if set(options.asr_begin_suppress_tokens) - {blank, options.asr_eos_token_id}:
        return "its first step suppresses tokens other than the blank and the end (CTranslate2's suppress_blank)"
    try:
        projection = [name for name in tensor_shapes(model_dir) if name.startswith(STATE_PROJECTION)]
        if any(np.any(tensor_view(model_dir, name)) for name in projection):
            return "its decoder-state projection is trained (non-zero): it needs Whisper's decoder states, which CTranslate2 does not return"
        tensor_view(model_dir, TOKEN_MAP)
    except (KeyError, ValueError) as exc:
        return f"its weights lack what the mixture reads ({exc})"
    if embedding_table_name(model_dir) is None:
        return "its LLM's input embedding table is not found by shape among its weights"
    return None


def read_front_end(model_dir: str | os.PathLike) -> tuple[AudioLayout, AsrTokensConfig]:
    """The checkpoint's audio layout and its asr_tokens options, from its processor_config.json."""
    processor = _processor_config(Path(model_dir))
    return AudioLayout.from_dict(processor["audio_layout"]), AsrTokensConfig.from_dict(processor["frontend_config"])


class SoftTokens:
    """The e2e audio embeddings of one checkpoint (see the module's text), decoded by ``whisper`` (a
    ``ct2_asr.Ct2Whisper`` of the same checkpoint's Whisper)."""

    def __init__(self, model_dir: str | os.PathLike, whisper):
        model_dir = Path(model_dir)
        why = unavailable(model_dir, whisper.folder)
        if why is not None:
            raise ValueError(f"{model_dir}: the e2e embeddings cannot be computed without torch: {why}")
        self.whisper = whisper
        self.layout, self.options = read_front_end(model_dir)
        self.token_map = np.asarray(tensor_view(model_dir, TOKEN_MAP))  # ASR id -> LLM pieces (-1 padded)
        self.temperature = float(np.exp(np.asarray(tensor_view(model_dir, TEMPERATURE), dtype=np.float64)))
        self.table = tensor_view(model_dir, embedding_table_name(model_dir))  # (LLM vocabulary, hidden), mapped
        self.costs = np.maximum((self.token_map >= 0).sum(-1), 1)  # slots each ASR token fills
        self.last_seconds: float | None = None

    @property
    def hidden_size(self) -> int:
        return int(self.table.shape[1])

    def windows(self, clip: np.ndarray) -> list[np.ndarray]:
        """The processor's windows of a clip (a clip shorter than the layout's minimum is zero-padded first)."""
        if clip.shape[0] < self.layout.min_samples:
            clip = np.pad(clip, (0, self.layout.min_samples - clip.shape[0]))
        return [clip[start:end] for start, end in self.layout.split_windows(clip.shape[0])]

    def decode(self, windows: list[np.ndarray]) -> list[tuple[list[int], np.ndarray, np.ndarray]]:
        """Greedy decoding of windows (CTranslate2 decodes them side by side). Per window: the tokens kept
        within its slots, and at each one's step the top-``asr_token_mixture`` scores and token ids (tokens, k), read
        from the step's scores over the vocabulary (suppressed tokens at -inf) and not kept beyond."""
        import ctranslate2

        whisper, options, k = self.whisper, self.options, self.options.asr_token_mixture
        whisper._on_later_threads()
        slots = [options.window_token_slots(self.layout, self.layout.audio_frames(w.shape[0])) for w in windows]
        # the encoder one window at a time (its attention over 1,500 frames is the memory peak), the decoder on all
        # of them side by side (where batching pays): the same numbers as one batch (checked), a third less memory
        encoded = np.concatenate([np.asarray(whisper.model.encode(ctranslate2.StorageView.from_array(
            np.ascontiguousarray(whisper._features(w)[None])), to_cpu=True)) for w in windows])
        prompt = list(options.asr_prompt_ids)
        cap = max(slots)  # every token fills one slot at least
        results = whisper.model.generate(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(encoded)), [prompt] * len(windows), beam_size=1,
            max_length=max(2 * cap, cap + len(prompt) - 1), return_logits_vocab=True,
            suppress_tokens=list(options.asr_suppress_tokens), suppress_blank=bool(options.asr_begin_suppress_tokens))
        out = []
        floor = np.finfo(np.float32).min
        for w, budget in enumerate(slots):
            result, results[w] = results[w], None  # (each window's scores over the vocabulary freed once read)
            tokens, used = [], 0
            for token in result.sequences_ids[0]:
                cost = int(self.costs[token])
                if token == options.asr_eos_token_id or used + cost > budget:
                    break
                tokens.append(int(token))
                used += cost
            top_scores = np.zeros((len(tokens), k), dtype=np.float32)
            top_ids = np.zeros((len(tokens), k), dtype=np.int64)
            for i, step in enumerate(result.logits[0][: len(tokens)]):
                step = np.asarray(step)
                top = np.argpartition(-step, k - 1)[:k]
                top_ids[i], top_scores[i] = top, np.where(step[top] <= floor, -np.inf, step[top])
            out.append((tokens, top_scores, top_ids))
        return out

    def embed(self, tokens: list[int], top_scores: np.ndarray, top_ids: np.ndarray) -> np.ndarray:
        """A window's embeddings (slots, hidden): the mixture of the top-k tokens' first pieces for a one-piece token
        (softmax of their scores at the trained temperature; control tokens get no weight), each piece's own
        embedding for a token of several."""
        pieces_of = self.token_map
        rows = []
        for token, scores, ids in zip(tokens, top_scores, top_ids):
            pieces = pieces_of[token][pieces_of[token] >= 0]
            if pieces.size > 1:
                rows.extend(np.asarray(self.table[pieces], dtype=np.float32))
                continue
            mapped = pieces_of[ids, 0]
            logits = np.where(mapped >= 0, scores.astype(np.float64) / self.temperature, -np.inf)
            if not np.isfinite(logits).any():  # control tokens only: nothing to mix
                rows.append(np.zeros(self.hidden_size, dtype=np.float32))
                continue
            weights = np.exp(logits - logits.max())
            weights /= weights.sum()
            rows.append((weights[:, None] * np.asarray(self.table[np.maximum(mapped, 0)], dtype=np.float64)).sum(0).astype(np.float32))
        return np.stack(rows) if rows else np.zeros((0, self.hidden_size), dtype=np.float32)

    def read(self, clip: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """A clip's audio embeddings (filled slots, hidden) and the ASR tokens behind them."""
        start = time.perf_counter()
        embeddings, tokens = [], []
        windows = self.windows(np.asarray(clip, dtype=np.float32))
        for first in range(0, len(windows), WINDOW_BATCH):
            for window_tokens, top_scores, top_ids in self.decode(windows[first : first + WINDOW_BATCH]):
                embeddings.append(self.embed(window_tokens, top_scores, top_ids))
                tokens += window_tokens
        self.last_seconds = time.perf_counter() - start
        return np.concatenate(embeddings), tokens


__all__ = ["SoftTokens", "unavailable", "embedding_table_name", "read_front_end"]
