"""Stage 1 of the posterior route (docs/hearing-study.md, lever 1 + 2): CTC alignment of the posterior head to
transcripts, with no LLM and no teacher in the step.

The head of ``audio_frontend="posterior"`` (``posterior_blank``: CTC's blank class) learns to write, at each pooled
encoder position, a distribution over the LLM's own tokens that CTC aligns to the transcript's LLM tokens. The LLM
then reads the mixtures of its own embeddings at the kept positions (``frontend_posterior``): what a transcript's
token embeddings would be, computed in one pass from the audio.

Rows are streamed (``dataprep/stream.py``): a worker process synthesises corpus sentences with the training voices
(espeak-ng, flite, festival; never the evaluation voice ``joe``) while the main process trains, so nothing is cached
to disk; row ``i`` is a pure function of (seed, i). The entry point joins the two:

    python -m audio_minichat.app.align --out checkpoints/align/posterior_ctc --minutes 45 --bf16

Every ``--eval-every`` steps, on held-out sentences read by the unseen ``joe`` voice and by espeak-ng's evaluation
voice: CTC loss, token error of the posterior's best path (a measure only: the LLM never reads an argmax), and the
retrieval probe: each clip's CTC loss per token against every held-out transcript; top-1 / top-5 of its own (chance
1/N) and the blind floor (the mean loss against the other transcripts). Progress goes to ``OUT/progress.jsonl``; the
head and the optimizer's state to ``OUT/checkpoint/`` (safetensors, written beside and swapped) every
``--save-every`` seconds; ``--ship FILE`` writes the head as the trained weights a build variant reads
(``assets/weights/posterior_ctc_projector.safetensors``: ``audio-minichat build-default --variant posterior_ctc``).
The learning rate is ``--lr`` until ``--decay-from`` rows, then falls linearly to ``--lr-floor`` x ``--lr`` at
``--decay-to`` rows and stays there: a function of the rows seen, so a resumed run continues the same schedule.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from ..metrics.wer import edit_distance
from ..utils.io import atomic_save_tensors, atomic_write_json
from .checkpoints import flatten_state, unflatten_state
from .losses import transcript_ctc_loss, transcript_ctc_matrix

EVAL_CHUNK = 8  # held-out clips scored at a time (each is positions x vocabulary)


# ---- the model ---------------------------------------------------------------------------------------------------
class Aligner:
    """The posterior model's encoder (frozen) and head (trained), with the LLM's tokenizer and embedding table."""

    def __init__(self, model_dir: str | Path, bf16: bool = False):
        from ..modeling_audio_minichat import AudioMiniChatForConditionalGeneration
        from ..processing_audio_minichat import AudioMiniChatProcessor

        self.model = AudioMiniChatForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
        self.processor = AudioMiniChatProcessor.from_pretrained(model_dir)
        self.frontend = self.model.audio_frontend
        if not getattr(self.frontend.options, "posterior_blank", False):
            raise ValueError(f"{model_dir}: alignment needs audio_frontend='posterior' with posterior_blank")
        # CTC trains the head's scores themselves; the temperature is how sharply the LLM later reads them
        self.frontend.options = dataclasses.replace(self.frontend.options, posterior_temperature=1.0)
        self.model.requires_grad_(False)
        self.bf16 = bf16  # the frozen encoder in bfloat16, the head's products under bfloat16 autocast
        self.frontend.encoder.to(torch.bfloat16 if bf16 else torch.float32)
        self.head_params = self.frontend.adapter_parameters()
        for p in self.head_params:
            p.requires_grad_(True)
        self.table = self.model.get_input_embeddings().weight.detach()
        self.tokenizer = self.processor.tokenizer

    def targets(self, texts: list[str]) -> list[torch.Tensor]:
        return [torch.tensor(self.tokenizer(t, add_special_tokens=False)["input_ids"], dtype=torch.long) for t in texts]

    def states(self, clips: list[np.ndarray]) -> list[torch.Tensor]:
        feats = self.processor._features(clips)
        key = self.processor.audio_input_name
        with torch.no_grad():
            states = self.frontend.encoder_states(feats[key], feats[f"{key}_mask"], feats["audio_window_clip"])
        return [s.float() for s in states]

    def scores(self, states: list[torch.Tensor], columns: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(clips, positions, vocab + 1) float32 scores, padded with zeros past each clip's ``lengths``: the head runs
        on the clips' positions packed together (no work on padding). ``columns``: only those tokens (+ the blank)."""
        lengths = torch.tensor([s.shape[0] for s in states])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            if self.frontend.projector.per_sequence:  # a head with temporal context: each clip alone
                flat = torch.cat([self.frontend.scores(s, self.table, columns) for s in states])
            else:
                flat = self.frontend.scores(torch.cat(states), self.table, columns)
        return torch.nn.utils.rnn.pad_sequence(flat.float().split(lengths.tolist()), batch_first=True), lengths


# ---- measures ----------------------------------------------------------------------------------------------------
def candidates(targets: list[torch.Tensor], vocab: int, negatives: int, generator: torch.Generator,
               exclude: int | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A training step's token candidates (sampled softmax): the batch's target tokens plus ``negatives`` tokens drawn
    uniformly (``exclude``, the audio placeholder, never), and the targets renumbered into them. CTC then normalises
    over the candidates and the blank only: every token is pushed down whenever drawn, and the step's cost follows
    the candidates' number instead of the vocabulary's. 0 negatives: the whole vocabulary."""
    if negatives <= 0:
        return None, targets
    drawn = torch.randint(0, vocab, (negatives,), generator=generator)
    columns = torch.unique(torch.cat([torch.cat(targets), drawn]))
    if exclude is not None:
        columns = columns[columns != exclude]
    index = torch.full((vocab,), -1, dtype=torch.long)
    index[columns] = torch.arange(columns.numel())
    return columns, [index[t] for t in targets]


def best_path(scores: torch.Tensor, length: int) -> list[int]:
    """The posterior's most probable token per position, repeats collapsed, blanks removed (a measure only)."""
    blank = scores.shape[-1] - 1
    ids = scores[:length].argmax(-1).tolist()
    out, prev = [], None
    for t in ids:
        if t != prev and t != blank:
            out.append(t)
        prev = t
    return out


@torch.no_grad()
def evaluate(aligner: Aligner, sets: dict) -> dict:
    result = {}
    for name, items in sets.items():
        texts = [t for t, _ in items]
        targets = aligner.targets(texts)
        losses, errors, rows = [], 0, []
        for start in range(0, len(items), EVAL_CHUNK):  # a chunk's scores at a time (each is clips x positions x vocab)
            chunk = slice(start, start + EVAL_CHUNK)
            scores, lengths = aligner.scores(aligner.states([a for _, a in items[chunk]]))
            losses.append(float(transcript_ctc_loss(scores, lengths, targets[chunk])) * scores.shape[0])
            errors += sum(edit_distance(best_path(scores[i], int(lengths[i])), targets[start + i].tolist())
                          for i in range(scores.shape[0]))
            rows.append(transcript_ctc_matrix(scores, lengths, targets))
        loss = sum(losses) / len(items)
        matrix = torch.cat(rows)
        own = matrix.diagonal()
        ranks = (matrix < own.unsqueeze(1)).sum(1)  # texts scoring better than the clip's own
        off = ~torch.eye(len(items), dtype=torch.bool)
        pairs = matrix[off]  # every clip against the other transcripts: the blind floor (those that fit its positions)
        result[name] = {"ctc_loss": round(loss, 4), "token_error": round(errors / sum(len(t) for t in targets), 4),
                        "retrieval_top1": round(float((ranks == 0).float().mean()), 4),
                        "retrieval_top5": round(float((ranks < 5).float().mean()), 4),
                        "own_loss_per_token": round(float(own.mean()), 4),
                        "blind_loss_per_token": round(float(pairs[torch.isfinite(pairs)].mean()), 4),
                        "blind_pairs_too_long": round(float((~torch.isfinite(pairs)).float().mean()), 4), "clips": len(items)}
    return result


# ---- checkpoints -------------------------------------------------------------------------------------------------
def head_file(run: Path) -> Path:
    """Where a run folder's checkpoint keeps its head (the trained weights; the optimizer and state beside it)."""
    return Path(run) / "checkpoint" / "head.safetensors"


def save_checkpoint(out: Path, aligner: Aligner, optimizer, state: dict) -> None:
    folder = out / "checkpoint"
    folder.mkdir(parents=True, exist_ok=True)
    head = {k: v.detach().contiguous() for k, v in aligner.frontend.projector.state_dict().items()}
    atomic_save_tensors(head, head_file(out))
    tensors, meta = flatten_state(optimizer.state_dict())
    atomic_save_tensors(tensors, folder / "optimizer.safetensors")
    atomic_write_json(folder / "state.json", {**state, "optimizer_meta": meta})  # last: the checkpoint is complete


def load_checkpoint(out: Path, aligner: Aligner, optimizer) -> dict | None:
    from safetensors.torch import load_file

    folder = out / "checkpoint"
    if not (folder / "state.json").is_file():
        return None
    state = json.loads((folder / "state.json").read_text())
    aligner.frontend.projector.load_state_dict(load_file(str(head_file(out))))
    optimizer.load_state_dict(unflatten_state(load_file(str(folder / "optimizer.safetensors")), state.pop("optimizer_meta")))
    return state


def ship_weights(out: Path, path: Path, provenance: dict) -> Path:
    """The run's head as a shippable trained-weights file (``projector.*``, read by apply_trained_weights: the
    ``posterior_ctc`` build variant), beside a JSON of where it came from and its last measures."""
    from safetensors.torch import load_file

    head = load_file(str(head_file(out)))
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = {f"projector.{k}": v.contiguous() for k, v in head.items()}
    atomic_save_tensors(weights, path, {"format": "pt", "audio_frontend": "posterior"})
    atomic_write_json(path.with_suffix(".json"), {"tensors": {k: list(v.shape) for k, v in weights.items()}, **provenance})
    return path


# ---- the run -----------------------------------------------------------------------------------------------------
def build_base() -> Path:
    """The untrained ``posterior_ctc`` build (``build_default(variant="posterior_ctc", untrained=True)``: once, into the
    model cache; deterministic)."""
    from ..assets.default_build import build_default

    return build_default(variant="posterior_ctc", untrained=True)


def learning_rate(args, rows: int) -> float:
    """``--lr`` until ``--decay-from`` rows, linear to ``--lr-floor * --lr`` at ``--decay-to`` rows, then flat."""
    start, end = getattr(args, "decay_from", None), getattr(args, "decay_to", None)
    if start is None or end is None or rows <= start:
        return args.lr
    done = min(1.0, (rows - start) / max(1, end - start))
    return args.lr * (1.0 - done * (1.0 - args.lr_floor))


def train(args, stream, sets: dict) -> dict:
    """The alignment loop: ``stream`` hands out rows (``take(n)``, ``next_row``, ``skipped``; dataprep.stream.RowStream
    started at ``initial_state(args)["next_row"]``), ``sets`` the held-out {voice: [(text, audio)]}."""
    out = Path(args.out)
    aligner, optimizer, state = args.aligner, args.optimizer, args.state
    progress = open(out / "progress.jsonl", "a", encoding="utf-8")
    budget = args.minutes * 60
    last_save = time.monotonic()
    started = time.monotonic() - state["seconds"]
    ema = None
    generator = torch.Generator().manual_seed(args.seed * 1_000_003 + state["step"])  # seeded by the step resumed at

    def log(record):
        progress.write(json.dumps(record) + "\n")
        progress.flush()
        print(f"[align] {json.dumps(record)}", flush=True)

    try:
        if state["step"] == 0:
            log({"step": 0, "rows": 0, "seconds": 0.0, "eval": evaluate(aligner, sets)})
        while time.monotonic() - started < budget and not (getattr(args, "steps", 0) and state["step"] >= args.steps):
            batch = stream.take(args.batch)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(args, state["rows"])
            columns, targets = candidates(aligner.targets([t for t, _ in batch]), aligner.frontend.projector.vocab,
                                          args.negatives, generator, aligner.model.config.audio_token_id)
            scores, lengths = aligner.scores(aligner.states([a for _, a in batch]), columns)
            loss = transcript_ctc_loss(scores, lengths, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(aligner.head_params, 1.0)
            optimizer.step()
            state.update(step=state["step"] + 1, rows=state["rows"] + len(batch), next_row=stream.next_row,
                         skipped=state["skipped"] + stream.skipped, seconds=time.monotonic() - started)
            stream.skipped = 0
            value = float(loss.detach())
            ema = value if ema is None else 0.95 * ema + 0.05 * value
            if state["step"] % args.log_every == 0:
                print(f"[align] step {state['step']} rows {state['rows']} loss {ema:.3f} "
                      f"({state['rows'] / state['seconds']:.2f} rows/s)", flush=True)
            if state["step"] % args.eval_every == 0:
                log({"step": state["step"], "rows": state["rows"], "seconds": round(state["seconds"], 1),
                     "train_loss": round(ema, 4), "lr": learning_rate(args, state["rows"]), "eval": evaluate(aligner, sets)})
            if time.monotonic() - last_save > args.save_every:
                save_checkpoint(out, aligner, optimizer, state)
                last_save = time.monotonic()
        save_checkpoint(out, aligner, optimizer, state)
        log({"step": state["step"], "rows": state["rows"], "seconds": round(state["seconds"], 1),
             "train_loss": None if ema is None else round(ema, 4), "eval": evaluate(aligner, sets), "final": True})
    finally:
        progress.close()
    return state


def evaluate_checkpoint(args, sets: dict) -> dict:
    """One evaluation of the run's current head, appended to ``OUT/progress.jsonl`` (marked ``evaluate_only``)."""
    state = args.state
    record = {"step": state["step"], "rows": state["rows"], "seconds": round(state["seconds"], 1), "evaluate_only": True,
              "eval": evaluate(args.aligner, sets)}
    with open(Path(args.out) / "progress.jsonl", "a", encoding="utf-8") as progress:
        progress.write(json.dumps(record) + "\n")
    print(f"[align] {json.dumps(record)}", flush=True)
    return record


def initial_state(args) -> None:
    """The run's model, optimizer and state (resumed from ``OUT/checkpoint`` when there is one), set on ``args``."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    args.base = Path(args.model) if args.model else build_base()
    args.aligner = Aligner(args.base, bf16=args.bf16)
    args.optimizer = torch.optim.AdamW(args.aligner.head_params, lr=args.lr, weight_decay=0.0)
    start = run_start(args)
    args.state = load_checkpoint(out, args.aligner, args.optimizer)
    if args.state is None:
        if start["init_head"]:
            seed_head(args.aligner, Path(start["init_head"]))
        args.state = {"step": 0, "next_row": start["first_row"], "seconds": 0.0, "rows": 0, "skipped": 0, **start}
    check_run_start(args, args.state)
    if args.state["step"]:
        print(f"[align] resumed at step {args.state['step']} (row {args.state['next_row']})", flush=True)


def seed_head(aligner: Aligner, run: Path) -> None:
    """A fresh run's head from another run's (``run/checkpoint/head.safetensors``): every weight that file has must be
    in this head with its shape; weights this head has beyond it keep the model's (an ``attn_mlp`` head seeded by a
    ``conv_mlp`` one: its attention blocks, which start silent, so it starts as that head)."""
    from safetensors.torch import load_file

    path = head_file(run)
    if not path.is_file():
        raise SystemExit(f"--init-head {run}: {path} does not exist (a run folder of app.align with a checkpoint)")
    weights = load_file(str(path))
    own = aligner.frontend.projector.state_dict()
    foreign = sorted(k for k in weights if k not in own)
    wrong = sorted(k for k in weights if k in own and tuple(weights[k].shape) != tuple(own[k].shape))
    if foreign or wrong:
        raise SystemExit(f"--init-head {run}: its head does not fit this model's ({aligner.frontend.config.projector_type}): "
                         + (f"weights it lacks {foreign[:3]}" if foreign else f"shapes differ for {wrong[:3]}"))
    aligner.frontend.projector.load_state_dict(weights, strict=False)


# What a run keeps from its start (in its checkpoint's state), with the value of checkpoints written before the option.
RUN_START = {"unique_rows": 0, "init_head": None, "first_row": 0}


def run_start(args) -> dict:
    """The options a run keeps from its start (``RUN_START``), as given now."""
    start = {key: getattr(args, key, default) for key, default in RUN_START.items()}
    start["init_head"] = str(start["init_head"]) if start["init_head"] else None
    return start


def check_run_start(args, state: dict) -> None:
    """A resumed run keeps its start: the rows (``--unique-rows``, ``--first-row``) and the head it was seeded by
    (``--init-head``); checkpoints from before an option hold its default."""
    for key, value in run_start(args).items():
        kept = state.get(key, RUN_START[key])
        if kept != value:
            raise SystemExit(f"{Path(args.out) / 'checkpoint'} was trained with --{key.replace('_', '-')} {kept}, not "
                             f"{value}: a run keeps its start (start another --out for another arm)")


def finish(args) -> None:
    """``--ship FILE``: the run's head as shippable trained weights, with the command, the rows and the last measures."""
    if not args.ship:
        return
    import sys

    state = args.state
    records = [json.loads(line) for line in (Path(args.out) / "progress.jsonl").read_text().splitlines() if line.strip()]
    provenance = {"checkpoint": str(Path(args.out) / "checkpoint"), "command": "python -m audio_minichat.app.align "
                  + " ".join(sys.argv[1:]), "rows": state["rows"], "steps": state["step"],
                  "seconds": round(state["seconds"], 1), "last_eval": records[-1] if records else None}
    if args.ship_note:
        provenance["note"] = args.ship_note
    print(ship_weights(Path(args.out), Path(args.ship), provenance), flush=True)
