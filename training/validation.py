"""Validation during training: response perplexity under the audio prompt vs the text prompt, sample generations."""

from __future__ import annotations

import json
import math
import os

import torch
from transformers import TrainerCallback

from ..metrics.perplexity import response_nll
from .collator import DistillationCollator, decode_audio, split_batch


@torch.no_grad()
def response_perplexity(model, batches) -> dict[str, float]:
    """Token-level response perplexity with the audio prompt and with the text prompt (same LLM)."""
    totals = {"audio": [0.0, 0], "text": [0.0, 0]}
    model.eval()
    llm = model.language_model
    for batch in batches:
        student, teacher = split_batch(batch)
        labels = student.pop("labels")
        for kind, logits, lab in (
            ("audio", model(**student).logits, labels),
            ("text", llm(input_ids=teacher["input_ids"], attention_mask=teacher["attention_mask"]).logits, teacher["labels"]),
        ):
            nll, count = response_nll(logits, lab)
            totals[kind][0] += nll
            totals[kind][1] += count
    return {f"ppl_{k}": math.exp(v[0] / max(v[1], 1)) for k, v in totals.items()}


class ValidationCallback(TrainerCallback):
    """At each evaluation: audio vs text response perplexity and a few logged sample generations."""

    def __init__(self, trainer, eval_rows: list[dict], collator: DistillationCollator, n_samples: int):
        self.trainer, self.rows, self.collator, self.n = trainer, eval_rows, collator, n_samples

    def on_evaluate(self, args, state, control, **kwargs):
        model = self.trainer.base_model
        device = next(model.parameters()).device
        batches = []
        for i in range(0, len(self.rows), args.per_device_eval_batch_size):
            b = self.collator(self.rows[i : i + args.per_device_eval_batch_size])
            batches.append({k: v.to(device) for k, v in b.items()})
        metrics = response_perplexity(model, batches)
        proc, c = self.collator.processor, self.collator.cfg
        samples = []
        for row in self.rows[: self.n]:
            clip = decode_audio(row[c.audio_column], "eval")
            spans = [self.collator.row_spans(row, "eval", len(clip) / proc.layout.sampling_rate)] if proc.frontend.needs_spans else None
            inputs = proc(text=proc.build_prompt(row[c.prompt_column]), audio=[clip], sampling_rate=proc.layout.sampling_rate,
                          audio_spans=spans).to(device)
            out = model.generate(**inputs, max_new_tokens=48, do_sample=False)
            text = proc.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0]
            samples.append({"transcript": row[c.transcript_column], "teacher": row[c.response_column], "audio_prompt": text})
        model.train()
        if state.is_world_process_zero:
            self.trainer.log({f"eval_{k}": v for k, v in metrics.items()})
            with open(os.path.join(args.output_dir, "sample_generations.jsonl"), "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": state.global_step, **metrics, "samples": samples}) + "\n")


__all__ = ["response_perplexity", "ValidationCallback"]
