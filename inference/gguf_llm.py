"""The LLM of the cascade, the text mode and the soft cascade's e2e run by llama.cpp from the checkpoint's own GGUF
file (issue 26).

The offline default's LLM *is* a GGUF file (SmolLM2-135M-Instruct Q4_1, dequantised into the checkpoint), and a
checkpoint built with ``audio-minichat build --llm FILE.gguf`` names its file too (``config.provenance["llm"]``).
Where llama-cpp-python is installed (extra ``fast``), :class:`GgufLLM` answers text prompts from that file: the
prompt is the checkpoint's own (its chat template, rendered by transformers' renderer as the processor does, the
same user-turn parts: prompt_parts.py), tokenized by the checkpoint's own tokenizer (``tokenizers``), and decoded
greedily with the checkpoint's generation config (``answer_no_repeat_ngram_size`` as modeling_audio_minichat's
``AnswerNoRepeatNGram``). Neither torch nor transformers' models are imported, so a cascade on the CPU runs in
a fraction of the memory and without their import.

The answers are llama.cpp's arithmetic on the quantised weights (Q4_1 weights, 8-bit activations), not the
dequantised float weights the transformers route computes with: they can differ in wording. ``--json`` says which
backend answered (``llm_backend``); docs/cpu-speed.md holds the quality check (spoken-XSum agreement with the
transformers route's text answers and loop rate, side by side).

:meth:`GgufLLM.prefill` evaluates a prompt's beginning ahead (the cascade feeds it the transcript window by window
while Whisper still runs); a later :meth:`GgufLLM.generate` keeps the longest evaluated prefix that its prompt
shares and evaluates only the rest, so the answer is the same as without the prefill. :meth:`GgufLLM.generate_parts`
takes a prompt of token ids and input embeddings (e2e's audio, read in place of the audio placeholder).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np

from ..prompt_parts import audio_with_text, fill_placeholders, render_chat, render_content

BACKEND = "llama.cpp"
REFERENCE = "transformers"
LLM_BACKENDS = ("auto", BACKEND, REFERENCE)
EXTRA = "fast"  # the setup.py extra that installs llama-cpp-python
EVAL_BLOCK = 64  # prompts are evaluated in blocks of this many tokens from position 0 (GgufLLM._evaluate)
# generation-config fields this route follows; any other set to a non-default value keeps the transformers route
_DECODING_FIELDS = {"do_sample": False, "num_beams": 1, "answer_no_repeat_ngram_size": None, "max_new_tokens": None,
                    "bos_token_id": None, "eos_token_id": None, "pad_token_id": None, "use_cache": True,
                    "output_attentions": False, "output_hidden_states": False, "transformers_version": None,
                    "_from_model_config": None, "temperature": None, "top_p": None, "top_k": None}


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def gguf_file(model_dir: str | os.PathLike) -> Path | None:
    """The GGUF file the checkpoint's LLM was built from (``config.provenance["llm"]``: an offline name with a pinned
    GGUF, or a ``.gguf`` path), where it is on this machine; None otherwise."""
    spec = str((_read_json(Path(model_dir) / "config.json").get("provenance") or {}).get("llm") or "")
    if spec.lower().endswith(".gguf"):
        path = Path(spec).expanduser()
        return path if path.is_file() else None
    from ..assets.offline import ASSET_FILES, AssetError, asset_path

    if f"{spec}/gguf" not in ASSET_FILES:
        return None
    try:
        return asset_path(f"{spec}/gguf")
    except AssetError:
        return None


def unavailable(model_dir: str | os.PathLike) -> str | None:
    """Why :class:`GgufLLM` cannot answer for this checkpoint here (one line), or None."""
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        return f"llama-cpp-python is not installed (pip install -e '.[{EXTRA}]', see docs/cpu-speed.md)"
    model_dir = Path(model_dir)
    if gguf_file(model_dir) is None:
        return "the checkpoint's LLM was not built from a GGUF file found on this machine"
    if not (model_dir / "tokenizer.json").is_file():
        return "the checkpoint has no tokenizer.json"
    gen = _read_json(model_dir / "generation_config.json")
    odd = sorted(k for k, v in gen.items() if k not in _DECODING_FIELDS or (_DECODING_FIELDS[k] is not None and v != _DECODING_FIELDS[k]))
    if odd:
        return f"its generation config sets {', '.join(odd)}, which this route does not follow"
    return None


class GgufLLM:
    """The checkpoint's LLM from its GGUF file in llama.cpp, on ``threads`` CPU threads (see the module's text)."""

    def __init__(self, model_dir: str | os.PathLike, threads: int = 1):
        from llama_cpp import Llama
        from tokenizers import Tokenizer

        why = unavailable(model_dir)
        if why is not None:
            raise ValueError(f"{model_dir}: llama.cpp cannot run this checkpoint's LLM: {why}")
        self.model_dir = Path(model_dir)
        self.gguf = gguf_file(self.model_dir)
        config = _read_json(self.model_dir / "config.json")
        self.tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        tok_config = _read_json(self.model_dir / "tokenizer_config.json")
        processor = _read_json(self.model_dir / "processor_config.json")
        template = self.model_dir / "chat_template.jinja"
        self.chat_template = (template.read_text(encoding="utf-8") if template.is_file()
                              else processor.get("chat_template") or tok_config.get("chat_template"))
        if not self.chat_template:
            raise ValueError(f"{model_dir}: no chat template (chat_template.jinja)")
        self.special_tokens = {k: tok_config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")
                               if isinstance(tok_config.get(k), str)}
        self.audio_token = config.get("audio_token") or processor.get("audio_token") or "<|audio|>"
        gen = _read_json(self.model_dir / "generation_config.json")
        eos = gen.get("eos_token_id")
        self.eos_ids = {int(t) for t in (eos if isinstance(eos, list) else [eos]) if t is not None}
        self.no_repeat = int(gen.get("answer_no_repeat_ngram_size") or 0)
        self.max_context = int((config.get("text_config") or {}).get("max_position_embeddings") or 2048)
        self.threads = threads
        self.llm = Llama(model_path=str(self.gguf), n_ctx=self.max_context, n_batch=512, n_threads=threads,
                         n_threads_batch=threads, verbose=False)
        if self.llm.n_vocab() < self.tokenizer.get_vocab_size(with_added_tokens=False):
            raise ValueError(f"{self.gguf}: {self.llm.n_vocab()} tokens, fewer than the checkpoint's tokenizer's")
        self._lock = threading.Lock()  # one evaluation at a time (the prefill's thread, generate)
        self.hidden_size = int(self.llm.n_embd())
        self._embd_batch = None  # llama.cpp's batch of input embeddings (_eval_embeddings), made on first use

    def __del__(self):
        batch, self._embd_batch = getattr(self, "_embd_batch", None), None
        if batch is not None:
            try:
                import llama_cpp

                llama_cpp.llama_batch_free(batch)
            except (ImportError, TypeError, AttributeError):  # (at interpreter exit, llama_cpp may be gone first)
                pass

    def batch_threads(self, threads: int | None = None) -> None:
        """Threads for evaluating prompts (the answer's tokens keep ``threads``); None: ``threads`` again. The cascade
        evaluates its prompt on fewer while Whisper runs beside it."""
        import llama_cpp

        llama_cpp.llama_set_n_threads(self.llm.ctx, self.threads, threads or self.threads)

    # ---- the prompt ----------------------------------------------------------------------------------
    def prompt(self, content: str, prompt: str | None = None, text_position: str = "before") -> str:
        """The text mode's prompt for ``content``: ``processor.build_prompt(processor.audio_with_text(prompt,
        text_position), transcripts=[content])`` of the checkpoint, built without torch."""
        parts = render_content(audio_with_text(prompt, text_position), self.audio_token)
        return self.render([{"role": "user", "content": parts}], [content])

    def audio_prompt(self, prompt: str | None = None, text_position: str = "before") -> tuple[list[int], list[int]]:
        """The e2e prompt's token ids before and after its audio (``processor.build_prompt(processor.audio_with_text(
        prompt, text_position))``, whose one audio placeholder the processor expands to the clip's embeddings)."""
        rendered = self.render([{"role": "user", "content": render_content(audio_with_text(prompt, text_position), self.audio_token)}])
        head, _, tail = rendered.partition(self.audio_token)
        return self.encode(head), self.encode(tail)

    def render(self, messages: list[dict], transcripts=None) -> str:
        """The chat template rendered on ``messages`` (contents flattened) with the generation prompt, as the processor's
        ``apply_chat_template`` renders it (prompt_parts.render_chat), the placeholders then filled with ``transcripts``."""
        rendered = render_chat(self.chat_template, messages, add_generation_prompt=True, **self.special_tokens)
        return rendered if transcripts is None else fill_placeholders(rendered, transcripts, self.audio_token)

    def encode(self, text: str) -> list[int]:
        """Token ids of a rendered prompt, as the processor tokenizes it (no special tokens added)."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    # ---- evaluation ----------------------------------------------------------------------------------
    def _evaluate(self, ids: list[int], whole: bool = False) -> int:
        """The cache holds ``ids`` afterwards: the longest prefix it already holds, cut to whole blocks, is kept and
        the rest evaluated, block by block. llama.cpp's numbers for a token depend on the batch it is evaluated in, so
        every prompt is evaluated in the same blocks (EVAL_BLOCK tokens from position 0, the last one shorter): an
        answer is the same whether its prompt's beginning was evaluated ahead (:meth:`prefill`) or not."""
        held = self.llm.input_ids[: self.llm.n_tokens].tolist()
        keep = 0
        for a, b in zip(held, ids):
            if a != b:
                break
            keep += 1
        # (for an answer, the last token's block at least: its logits come next; ``whole``: a prefill of whole blocks)
        keep = (keep if whole else min(keep, len(ids) - 1)) // EVAL_BLOCK * EVAL_BLOCK
        self.llm.n_tokens = keep
        for begin in range(keep, len(ids), EVAL_BLOCK):
            self.llm.eval(ids[begin : begin + EVAL_BLOCK])
        return keep

    def prefill(self, text: str, hold_back: int = 2) -> None:
        """Evaluate the beginning of a prompt ahead: its whole blocks, less the last ``hold_back`` tokens (the text
        that follows may merge with them into other tokens)."""
        ids = self.encode(text)
        ids = ids[: max(0, len(ids) - hold_back) // EVAL_BLOCK * EVAL_BLOCK]
        if ids:
            with self._lock:
                self._evaluate(ids, whole=True)

    def _logits(self) -> np.ndarray:
        import llama_cpp

        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.llm.ctx, -1), shape=(self.llm.n_vocab(),))

    def generate(self, text: str, max_new_tokens: int, on_text=None) -> tuple[str, float, str, dict]:
        """Greedy answer to a rendered prompt: ``(text, seconds, finish_reason, timings)``, timings with
        ``prefill_s`` (the prompt's part not evaluated ahead), ``decode_s`` and ``prefilled_tokens``."""
        ids = self.encode(text)
        return self._answer(len(ids), lambda: self._evaluate(ids), max_new_tokens, on_text)

    def generate_parts(self, parts: list, max_new_tokens: int, on_text=None) -> tuple[str, float, str, dict]:
        """:meth:`generate` for a prompt of parts, in order: token id lists and arrays of input embeddings
        (positions, hidden size), which the LLM reads in place of tokens (the e2e route's audio)."""
        return self._answer(sum(len(part) for part in parts), lambda: self._evaluate_parts(parts), max_new_tokens, on_text)

    def _evaluate_parts(self, parts: list) -> int:
        """The cache holds ``parts`` afterwards, evaluated from position 0, each part in blocks of EVAL_BLOCK from its
        own start (the same blocks for the same prompt, as :meth:`_evaluate`). An embedding's position holds id -1, so
        no later prompt shares it as a prefix."""
        self.llm.n_tokens = 0
        for part in parts:
            for begin in range(0, len(part), EVAL_BLOCK):
                block = part[begin : begin + EVAL_BLOCK]
                if isinstance(part, np.ndarray):
                    self._eval_embeddings(block)
                else:
                    self.llm.eval(list(block))
        return 0

    def _eval_embeddings(self, embeddings: np.ndarray) -> None:
        """Evaluate input embeddings (positions, hidden) at the next positions (at most EVAL_BLOCK)."""
        import ctypes

        import llama_cpp

        count, hidden = embeddings.shape
        if hidden != self.hidden_size:
            raise ValueError(f"embeddings of size {hidden}; this LLM's are {self.hidden_size}")
        if self._embd_batch is None:
            self._embd_batch = llama_cpp.llama_batch_init(EVAL_BLOCK, self.hidden_size, 1)
        batch, past = self._embd_batch, self.llm.n_tokens
        data = np.ascontiguousarray(embeddings, dtype=np.float32)
        ctypes.memmove(batch.embd, data.ctypes.data, data.nbytes)
        for i in range(count):
            batch.pos[i], batch.n_seq_id[i], batch.logits[i] = past + i, 1, i == count - 1
            batch.seq_id[i][0] = 0
        batch.n_tokens = count
        self.llm._ctx.kv_cache_seq_rm(-1, past, -1)
        if llama_cpp.llama_decode(self.llm.ctx, batch) != 0:
            raise RuntimeError(f"llama.cpp could not evaluate {count} input embeddings at position {past}")
        self.llm.input_ids[past : past + count] = -1
        self.llm.n_tokens = past + count

    def _answer(self, prompt_tokens: int, evaluate, max_new_tokens: int, on_text) -> tuple[str, float, str, dict]:
        if prompt_tokens >= self.max_context:
            raise ValueError(f"the prompt is {prompt_tokens} tokens and fills the LLM's context of {self.max_context} "
                             "tokens, leaving none to answer in: shorten the audio or the text")
        if prompt_tokens + max_new_tokens > self.max_context:
            raise ValueError(f"the prompt is {prompt_tokens} tokens and {max_new_tokens} new tokens would run past the "
                             f"LLM's context of {self.max_context} tokens: use max_new_tokens (--max-new-tokens) "
                             f"{self.max_context - prompt_tokens} or less, or shorten the audio or the text")
        start = time.perf_counter()
        with self._lock:
            prefilled = evaluate()  # (the tokens evaluated before it came: kept)
            prefill_s = time.perf_counter() - start
            new: list[int] = []
            shown = ""
            finish = "length"
            for _ in range(max_new_tokens):
                logits = self._logits()
                if self.no_repeat:
                    banned = banned_tokens(new, self.no_repeat)
                    if banned:
                        logits = logits.copy()
                        logits[banned] = -np.inf
                token = int(np.argmax(logits))
                new.append(token)
                if token in self.eos_ids:
                    finish = "stop"
                    break
                if on_text is not None:
                    shown = self._stream(new, shown, on_text)
                if len(new) < max_new_tokens:
                    self.llm.eval([token])
        answer = self.tokenizer.decode(new, skip_special_tokens=True)
        if on_text is not None and answer[len(shown):]:
            on_text(answer[len(shown):])
        elapsed = time.perf_counter() - start
        return answer.strip(), elapsed, finish, {"prefill_s": prefill_s, "decode_s": elapsed - prefill_s,
                                                 "prefilled_tokens": prefilled, "prompt_tokens": prompt_tokens}

    def _stream(self, new: list[int], shown: str, on_text) -> str:
        """Hand ``on_text`` the answer's new whole words (as transformers' TextStreamer: up to the last space)."""
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # a character cut between tokens
            return shown
        cut = text.rfind(" ") if not text.endswith("\n") else len(text)
        if cut > len(shown):
            on_text(text[len(shown):cut])
            return text[:cut]
        return shown


class _Layout:
    def __init__(self, sampling_rate: int):
        self.sampling_rate = sampling_rate


class TextPrompts:
    """What inference.longform reads of a processor (``llm.processor``), torch-free: the checkpoint's tokenizer, prompt
    building, context length and sampling rate, and, for e2e, the embeddings a clip gets (``front_end``: a callable
    giving the checkpoint's ``AudioLayout`` and its front end's options, called when first needed)."""

    def __init__(self, llm: GgufLLM, sampling_rate: int, front_end=None):
        self._llm = llm
        self.audio_token = llm.audio_token
        self.max_context_length = llm.max_context
        self.layout = _Layout(sampling_rate)
        self._front_end, self._read_front_end = None, front_end
        self.audio_with_text = staticmethod(audio_with_text)

    def num_audio_tokens(self, num_samples: int, num_spans: int | None = None) -> int:
        """``AudioMiniChatProcessor.num_audio_tokens``: the embeddings a clip of ``num_samples`` samples gets."""
        if self._read_front_end is None:
            raise ValueError("this route reads no audio embeddings (cascade and text only)")
        if self._front_end is None:
            self._front_end = self._read_front_end()
        layout, options = self._front_end
        return options.num_embeddings(layout, num_samples, num_spans)

    def tokenizer(self, text: str, add_special_tokens: bool = False, return_offsets_mapping: bool = False) -> dict:
        enc = self._llm.tokenizer.encode(text, add_special_tokens=add_special_tokens)
        out = {"input_ids": enc.ids}
        if return_offsets_mapping:
            out["offset_mapping"] = list(enc.offsets)
        return out

    def build_prompt(self, content, transcripts=None) -> str:
        """``AudioMiniChatProcessor.build_prompt`` of a user turn (its parts, or a string)."""
        return self._llm.render([{"role": "user", "content": render_content(content, self.audio_token)}], transcripts)


def banned_tokens(answer: list[int], size: int) -> list[int]:
    """Tokens that would repeat an n-gram of ``size`` within ``answer`` (modeling_audio_minichat.AnswerNoRepeatNGram's
    rule: the answer only, never the prompt)."""
    if size < 1 or len(answer) < size:
        return []
    tail = tuple(answer[len(answer) - size + 1:])
    return sorted({answer[i + size - 1] for i in range(len(answer) - size + 1) if tuple(answer[i:i + size - 1]) == tail})


__all__ = ["GgufLLM", "TextPrompts", "gguf_file", "unavailable", "banned_tokens", "BACKEND", "REFERENCE", "LLM_BACKENDS", "EXTRA"]
