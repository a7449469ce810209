"""Stage 2 of a data build: the frozen LLM's greedy answer to the text version of each surviving row's
prompt (repetition loops and a cut-off last sentence trimmed), one committed shard stage (``teacher/``) at a
time."""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

from .plan import AUDIO_TOKEN
from .shards import _shard_dir, shard_stage


_WORD_RE = re.compile(r"\S+")


def _norm_tok(w: str) -> str:
    return re.sub(r"[^\w]+", "", w.lower()) or w


def trim_repetition(text: str, max_ngram: int = 40, min_repeats: int = 3, min_repeats_long: int = 2,
                    long_ngram: int = 6, min_repeats_unigram: int = 4) -> str:
    """Cut a degenerate repetition loop off the end of ``text``, keeping its first occurrence.

    The tail is a loop when an n-gram of words (n <= ``max_ngram``, compared case- and punctuation-
    insensitively) repeats back to back up to the end, possibly ending inside a partial repeat: at least
    ``min_repeats_unigram`` times for one word, ``min_repeats`` for 2..``long_ngram``-1 words and
    ``min_repeats_long`` for longer n-grams (a whole sentence said twice in a row). Text before the loop
    keeps its original formatting. Returns ``text`` unchanged when there is no loop.
    """
    spans = [m.span() for m in _WORD_RE.finditer(text)]
    words = [_norm_tok(text[a:b]) for a, b in spans]
    n_words = len(words)
    best_keep = None
    for n in range(1, min(max_ngram, n_words // 2) + 1):
        # longest suffix periodic with period n: words[j] == words[j + n] for every j in it
        j = n_words - 1 - n
        while j >= 0 and words[j] == words[j + n]:
            j -= 1
        start = j + 1  # words[start:] has period n
        length = n_words - start
        need = min_repeats_unigram if n == 1 else (min_repeats_long if n >= long_ngram else min_repeats)
        if length >= n * need:
            keep = start + n  # the first occurrence of the cycle
            if best_keep is None or keep < best_keep:
                best_keep = keep
    if best_keep is None or best_keep >= n_words:
        return text
    return text[: spans[best_keep - 1][1]].rstrip()


_SENT_END = re.compile(r"[.!?][\"')\]]*(?=\s|$)")


def trim_incomplete_sentence(text: str) -> str:
    """Drop a trailing unfinished sentence (an answer cut by the token budget), if a finished one precedes it."""
    ends = [m.end() for m in _SENT_END.finditer(text)]
    if not ends or ends[-1] == len(text.rstrip()):
        return text
    return text[: ends[-1]].rstrip()


class Teacher:
    """The frozen LLM answering the text version of each prompt: greedy, left-padded batches."""

    def __init__(self, tcfg: dict):
        import torch

        from ..modeling_audio_minichat import AudioMiniChatForConditionalGeneration
        from ..processing_audio_minichat import AudioMiniChatProcessor

        self.cfg = tcfg
        src = tcfg.get("model") or "default"
        if src == "default":
            from ..assets.default_build import build_default

            src = build_default()
        if tcfg.get("threads"):
            torch.set_num_threads(int(tcfg["threads"]))
        dtype = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float32": torch.float32,
                 "fp32": torch.float32, "float16": torch.float16}[str(tcfg.get("dtype", "bfloat16"))]
        self.processor = AudioMiniChatProcessor.from_pretrained(str(src))
        self.model = AudioMiniChatForConditionalGeneration.from_pretrained(str(src), dtype=dtype).eval()
        self.tokenizer = self.processor.tokenizer
        self.source = str(src)

    def text_prompt(self, prompt: str, transcript: str) -> str:
        content = prompt.replace(AUDIO_TOKEN, self.processor.audio_token)
        return self.processor.build_prompt(content, transcripts=[transcript], system=self.cfg.get("system"))

    def budget(self, prompt: str, transcript: str) -> int:
        """max_new_tokens = factor x the user content's tokens (its text version), clamped to [min, cap]."""
        content = prompt.replace(AUDIO_TOKEN, transcript.strip())
        n = len(self.tokenizer(content, add_special_tokens=False)["input_ids"])
        budget = int(math.ceil(float(self.cfg.get("max_new_tokens_factor", 2.0)) * n))
        cap = self.cfg.get("max_new_tokens_cap")
        budget = max(int(self.cfg.get("min_new_tokens", 1)), budget)
        return min(budget, int(cap)) if cap else budget

    def answer(self, items: list[tuple[str, str]]) -> list[tuple[str, bool]]:
        """[(prompt, transcript)] -> [(response, hit_token_budget)], one left-padded greedy batch."""
        import torch

        texts = [self.text_prompt(p, t) for p, t in items]
        budgets = [self.budget(p, t) for p, t in items]
        enc = self.processor(text=texts, padding_side="left")
        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        with torch.inference_mode():
            gen = self.model.generate(
                input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=max(budgets),
                do_sample=False, num_beams=1, eos_token_id=eos, pad_token_id=pad,
                temperature=None, top_p=None, top_k=None,
            )
        new = gen[:, enc["input_ids"].shape[1]:]
        return [self.finish(row.tolist(), budget) for row, budget in zip(new, budgets)]

    def finish(self, ids: list[int], budget: int) -> tuple[str, bool]:
        """Generated token ids (up to and including EOS, if any) -> (response, hit_token_budget): cut at EOS or
        the row's budget, decoded, repetition loops trimmed, an unfinished last sentence dropped when cut."""
        eos = self.tokenizer.eos_token_id
        stop = next((i for i, t in enumerate(ids) if t == eos), None)
        hit = stop is None or stop >= budget
        ids = ids[: min(budget, stop if stop is not None else len(ids))]
        text = trim_repetition(self.tokenizer.decode(ids, skip_special_tokens=True).strip())
        if hit and self.cfg.get("trim_incomplete", True):
            text = trim_incomplete_sentence(text)
        return text, hit


def _synth_ids(out: Path, k: int) -> list[str]:
    return json.loads((_shard_dir(out, k) / "synth" / "ids.json").read_text())


def run_teacher(cfg: dict, out: Path, rows: list[dict], shards: list[list[dict]]) -> tuple[float, int]:
    from tqdm.auto import tqdm

    todo = [k for k in range(len(shards)) if not (_shard_dir(out, k) / "teacher").exists()]
    if not todo:
        return 0.0, 0
    t0 = time.perf_counter()
    teacher = Teacher(cfg["teacher"])
    by_id = {r["id"]: r for r in rows}
    bs = max(1, int(cfg["teacher"].get("batch_size", 16)))
    n_tokens = 0
    bar = tqdm(total=sum(len(_synth_ids(out, k)) for k in todo), desc="teacher", unit="row", dynamic_ncols=True)
    try:
        for k in todo:
            ids = _synth_ids(out, k)
            # sort by prompt length so each batch pads little and its token budgets are alike
            order = sorted(ids, key=lambda i: len(by_id[i]["transcript"]) + len(by_id[i]["prompt"]))
            answers: dict[str, tuple[str, bool]] = {}
            for b in range(0, len(order), bs):
                batch = order[b:b + bs]
                res = teacher.answer([(by_id[i]["prompt"], by_id[i]["transcript"]) for i in batch])
                answers.update(zip(batch, res))
                bar.update(len(batch))
            lines, skipped = [], []
            for i in ids:
                text, hit = answers[i]
                if not text.strip():
                    skipped.append({"id": i, "reason": "empty_response", "detail": ""})
                    continue
                n_tokens += len(teacher.tokenizer(text, add_special_tokens=False)["input_ids"])
                lines.append(json.dumps({"id": i, "response": text, "hit_budget": hit}, ensure_ascii=False))
            with shard_stage(_shard_dir(out, k), "teacher") as tmp:
                (tmp / "responses.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
                (tmp / "skipped.json").write_text(json.dumps(skipped, ensure_ascii=False))
                (tmp / "meta.json").write_text(json.dumps({"model": teacher.source, "config": cfg["teacher"]}, default=str))
    finally:
        bar.close()
    return time.perf_counter() - t0, n_tokens
