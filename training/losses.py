"""The paper's objective, in one place: next-token prediction plus logit and hidden-state distillation.

The student is the LLM prompted with audio embeddings; the teacher is the same frozen LLM prompted with the
transcript as text. Both see the same response (the frozen LLM's own answer to the text prompt). Each term is a
per-sample mean over its response tokens, averaged over the batch, so a batch equals the mean of its samples and
gradient accumulation equals the larger batch:

- ``ntp``: next-token prediction on the response given the audio prompt (paper weight 0.5);
- ``logit``: soft cross-entropy of the audio-prompt logits against the text-prompt logits at temperature ``T``
  (paper 0.5);
- ``feature``: MSE between LLM hidden states at ``feature_layers`` (paper 1.0; layer 0, the embeddings of
  identical tokens, is always zero and rejected).

Response positions are aligned through the label masks of the two batches, so any batch size and padding work.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..metrics.perplexity import response_mask
from .collator import split_batch
from .config import LossConfig
from .trainable import AdaptersOff

WEIGHTS = ("ntp", "logit", "feature")


def _per_sample_mean(s_mask: torch.Tensor):
    """``f(values)``: the mean over samples of each sample's mean over its response positions (``values`` lists the
    positions of ``s_mask`` row-major)."""
    s_counts = s_mask.sum(-1)
    if (s_counts == 0).any():
        raise ValueError(f"Sample(s) {torch.nonzero(s_counts == 0).flatten().tolist()} have no response tokens.")
    # sample index of each selected position, row-major: both batches list response tokens in the same order
    rows = torch.arange(s_mask.shape[0], device=s_mask.device).unsqueeze(1).expand_as(s_mask)[s_mask]

    def per_sample_mean(values: torch.Tensor) -> torch.Tensor:
        sums = torch.zeros(s_mask.shape[0], device=values.device, dtype=values.dtype).index_add(0, rows, values)
        return (sums / s_counts.to(values.dtype)).mean()

    return per_sample_mean


def response_losses(student_logits, targets, per_sample_mean, cfg: LossConfig, teacher_probs=None, teacher_index=None,
                    student_hidden: dict | None = None, teacher_hidden: dict | None = None) -> dict[str, torch.Tensor]:
    """THE three terms, written once: the student at its N response positions (row-major) against the teacher's
    targets at the same positions, whichever form they come in (a teacher forward, or the cache's top k).

    ``student_logits`` (N, V) and ``targets`` (N,) the response tokens; ``teacher_probs`` (N, K): the teacher's
    distribution at the temperature over the tokens ``teacher_index`` (N, K) (None: the whole vocabulary, in order);
    ``student_hidden`` / ``teacher_hidden``: layer -> (N, D). Without ``teacher_probs``, next-token prediction only.
    """
    s_logits = student_logits.float()
    out = {"ntp": per_sample_mean(F.cross_entropy(s_logits, targets, reduction="none"))}
    if teacher_probs is None:
        return out
    T = cfg.temperature
    log_q = F.log_softmax(s_logits / T, dim=-1)
    if teacher_index is not None:
        log_q = log_q.gather(-1, teacher_index)
    out["logit"] = per_sample_mean(-(teacher_probs.float() * log_q).sum(-1) * (T * T))
    if student_hidden and teacher_hidden and cfg.feature_layers:
        terms = [per_sample_mean(((student_hidden[layer].float() - teacher_hidden[layer].float()) ** 2).mean(-1))
                 for layer in cfg.feature_layers]
        out["feature"] = torch.stack(terms).mean()
    return out


def distillation_losses(student_logits, student_labels, teacher_logits, teacher_labels, student_hidden, teacher_hidden,
                        cfg: LossConfig) -> dict[str, torch.Tensor]:
    """The terms of a student and a teacher forward (full-sequence logits, labels, hidden states): their response
    positions aligned through the label masks, then :func:`response_losses`."""
    s_mask = response_mask(student_labels)
    s_counts = s_mask.sum(-1)
    per_sample_mean = _per_sample_mean(s_mask)
    targets = student_labels[:, 1:][s_mask[:, :-1]]
    if teacher_logits is None:
        return response_losses(student_logits[s_mask], targets, per_sample_mean, cfg)
    t_mask = response_mask(teacher_labels)
    if not torch.equal(t_mask.sum(-1), s_counts):
        raise ValueError(f"Student and teacher response lengths differ: {s_counts.tolist()} vs {t_mask.sum(-1).tolist()}.")
    if not torch.equal(teacher_labels[:, 1:][t_mask[:, :-1]], targets):
        raise ValueError("Student and teacher batches hold different response tokens.")
    teacher_probs = F.softmax(teacher_logits[t_mask].float() / cfg.temperature, dim=-1)
    s_hidden = t_hidden = None
    if student_hidden is not None and teacher_hidden is not None:
        s_hidden = {layer: student_hidden[layer][s_mask] for layer in cfg.feature_layers}
        t_hidden = {layer: teacher_hidden[layer][t_mask] for layer in cfg.feature_layers}
    return response_losses(student_logits[s_mask], targets, per_sample_mean, cfg, teacher_probs,
                           student_hidden=s_hidden, teacher_hidden=t_hidden)


def total_loss(terms: dict[str, torch.Tensor], cfg: LossConfig) -> torch.Tensor:
    return sum(getattr(cfg, name) * value for name, value in terms.items() if name in WEIGHTS)


def distillation_step(model, base, inputs: dict, cfg: LossConfig):
    """One student pass (audio prompt) + one teacher pass (the same frozen LLM, text prompt, no gradients).

    ``inputs`` is a :class:`~.collator.DistillationCollator` batch (``teacher_*`` keys hold the text-prompt side);
    ``model`` is what runs the student (possibly DDP-wrapped), ``base`` the unwrapped model whose
    ``language_model`` is the teacher (LoRA adapters switched off). Returns ``(loss, terms, student_outputs)``.
    The Trainer and ``scripts/bench_train.py`` both call it.
    """
    inputs, teacher_inputs = split_batch(inputs)
    labels = inputs.pop("labels")
    need_teacher = bool(teacher_inputs) and (cfg.logit > 0 or cfg.feature > 0)
    need_hidden = need_teacher and cfg.feature > 0
    outputs = model(**inputs, output_hidden_states=need_hidden)
    teacher_logits = teacher_hidden = t_labels = None
    if need_teacher:
        llm = base.language_model
        with torch.no_grad(), AdaptersOff(llm):
            t_labels = teacher_inputs.pop("labels")
            positions = (teacher_inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            teacher = llm(**teacher_inputs, position_ids=positions, output_hidden_states=need_hidden)
        teacher_logits, teacher_hidden = teacher.logits, teacher.hidden_states if need_hidden else None
    terms = distillation_losses(outputs.logits, labels, teacher_logits, t_labels,
                                outputs.hidden_states if need_hidden else None, teacher_hidden, cfg)
    loss = total_loss({k: v for k, v in terms.items() if k != "feature" or cfg.feature > 0}, cfg)
    return loss, terms, outputs


CACHED_PREFIX = "cached_"  # (training.feature_cache's batch keys: the teacher's cached targets)
# the cached stage-1 states of a feature_cache.CachedCollator batch: read here, never by the model's forward
ENCODER_STATE_KEYS = ("encoder_states", "encoder_state_lengths", "audio_num_samples")


def cached_distillation_step(model, base, inputs: dict, cfg: LossConfig):
    """The same three terms from cached encoder states and teacher targets (a ``feature_cache.CachedCollator``
    batch): the student pass only, its logits computed at the response positions alone.

    ``model`` runs the student (possibly DDP-wrapped), ``base`` is the unwrapped model, which embeds the prompt
    with the cached stage-1 states (its front end's stage 2). With the teacher cached at ``topk`` = the vocabulary
    the terms equal :func:`distillation_step`'s within float tolerance (tested); below it the logit term sums over the
    teacher's top k tokens (the mass outside them, under 1e-3 at k=64 on the default data, is left out). Returns
    ``(loss, terms, student_outputs)``.
    """
    inputs = dict(inputs)
    cached = {k[len(CACHED_PREFIX) :]: inputs.pop(k) for k in list(inputs) if k.startswith(CACHED_PREFIX)}
    states = [inputs.pop(k) for k in ENCODER_STATE_KEYS]
    labels = inputs.pop("labels")
    s_mask = response_mask(labels)
    counts = s_mask.sum(-1)
    if not torch.equal(counts, cached["counts"].to(counts.device)):
        raise ValueError(f"Student and cached teacher response lengths differ: {counts.tolist()} vs {cached['counts'].tolist()} "
                         "(a cache of another data set or tokenizer: rebuild it).")
    targets = labels[:, 1:][s_mask[:, :-1]]
    valid = torch.arange(cached["probs"].shape[1], device=counts.device).unsqueeze(0) < counts.unsqueeze(1)
    if not torch.equal(cached["response_ids"][valid], targets):
        raise ValueError("Student batch and cached teacher hold different response tokens (rebuild the cache).")
    need_hidden = cfg.feature > 0 and bool(cfg.feature_layers)
    positions = s_mask.any(0).nonzero().flatten()
    embeds, attention_mask, _ = base._embed_encoder_states(inputs["input_ids"], inputs.pop("attention_mask"), *states)
    outputs = model(**inputs, inputs_embeds=embeds, attention_mask=attention_mask, logits_to_keep=positions,
                    output_hidden_states=need_hidden)
    s_hidden = t_hidden = None
    if need_hidden:
        s_hidden = {layer: outputs.hidden_states[layer][s_mask] for layer in cfg.feature_layers}
        t_hidden = {layer: cached[f"hidden.{layer}"][valid] for layer in cfg.feature_layers}
    terms = response_losses(outputs.logits[s_mask[:, positions]], targets, _per_sample_mean(s_mask), cfg,
                            cached["probs"][valid], cached["index"][valid], s_hidden, t_hidden)
    return total_loss(terms, cfg), terms, outputs


__all__ = ["distillation_losses", "distillation_step", "cached_distillation_step", "response_losses", "total_loss", "response_mask"]


def transcript_ctc_loss(scores: torch.Tensor, lengths: torch.Tensor, targets: list[torch.Tensor]) -> torch.Tensor:
    """CTC of per-position scores against each clip's transcript tokens (the posterior front end's alignment stage,
    ``training/align_posterior.py``): ``scores`` (clips, positions, vocab + 1) with the blank last, ``lengths`` the
    clips' valid positions, ``targets`` each clip's token ids. The mean over clips of the loss per target token
    (torch's ``reduction="mean"``); clips whose transcript cannot fit their positions count zero."""
    blank = scores.shape[-1] - 1
    log_probs = torch.log_softmax(scores.float(), dim=-1).transpose(0, 1)  # (positions, clips, classes)
    target_lengths = torch.tensor([len(t) for t in targets], dtype=torch.long)
    flat = torch.cat(list(targets)).long() if targets else torch.zeros(0, dtype=torch.long)
    return torch.nn.functional.ctc_loss(log_probs, flat, lengths.long().cpu(), target_lengths, blank=blank,
                                        reduction="mean", zero_infinity=True)


def transcript_ctc_matrix(scores: torch.Tensor, lengths: torch.Tensor, targets: list[torch.Tensor]) -> torch.Tensor:
    """(clips, transcripts) CTC loss per target token of every clip against every transcript (the retrieval probe of
    ``training/align_posterior.py``); row ``i``, column ``i`` is :func:`transcript_ctc_loss` of clip ``i`` alone. Only
    the targets' and the blank's log-probabilities enter CTC, so the vocabulary is cut to those columns after
    normalising. A transcript too long for a clip's positions is infinitely unlikely (inf), never 0 as in training."""
    log_probs = torch.log_softmax(scores.float(), dim=-1)
    columns = torch.unique(torch.cat(targets))
    blank = scores.shape[-1] - 1
    cut = torch.cat([log_probs[..., columns], log_probs[..., blank : blank + 1]], dim=-1)
    remap = {int(c): i for i, c in enumerate(columns.tolist())}
    mapped = [torch.tensor([remap[int(t)] for t in tgt], dtype=torch.long) for tgt in targets]
    target_lengths = torch.tensor([len(t) for t in mapped], dtype=torch.long)
    n = len(targets)
    out = torch.empty(scores.shape[0], n)
    for i in range(scores.shape[0]):
        lp = cut[i : i + 1, : int(lengths[i])].expand(n, -1, -1).transpose(0, 1)
        loss = F.ctc_loss(lp, torch.cat(mapped), torch.full((n,), int(lengths[i]), dtype=torch.long), target_lengths,
                          blank=cut.shape[-1] - 1, reduction="none", zero_infinity=False)
        out[i] = loss / target_lengths.float()
    return out
