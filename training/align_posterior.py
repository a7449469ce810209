"""Stage 1 of the posterior route (docs/hearing-study.md, lever 1 + 2): CTC alignment of the posterior head to
transcripts, with no LLM and no teacher in the step.

The head of ``audio_frontend="posterior"`` (``posterior_blank``: CTC's blank class) learns to write, at each pooled
encoder position, a distribution over the LLM's own tokens that CTC aligns to the transcript's LLM tokens. The LLM
then reads the mixtures of its own embeddings at the kept positions (``frontend_posterior``): what a transcript's
token embeddings would be, computed in one pass from the audio.

Rows are streamed: a worker process synthesises corpus sentences (``dataprep.corpora``) with the training voices
(espeak-ng, flite, festival; never the evaluation voice ``joe``) while the main process trains, so nothing is cached
to disk. Row ``i`` is a pure function of (seed, i): a run resumed at row ``i`` sees what it would have seen.

    python -m audio_minichat.training.align_posterior --out runs/align/tied --minutes 45

Every ``--eval-every`` steps, on held-out sentences read by the unseen ``joe`` voice and by espeak-ng's evaluation
voice: CTC loss, token error of the posterior's best path (a measure only: the LLM never reads an argmax), and the
retrieval probe: each clip's CTC loss per token against every held-out transcript; top-1 / top-5 of its own (chance
1/N) and the blind floor (the mean loss against the other transcripts). Progress goes to ``OUT/progress.jsonl``; the
head and the optimizer's state to ``OUT/checkpoint/`` (safetensors, written beside and swapped) every
``--save-every`` seconds; ``--export DIR`` writes a complete checkpoint with the trained head.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from ..metrics.wer import edit_distance
from ..utils.io import atomic_save_tensors, atomic_write_json
from .checkpoints import flatten_state, unflatten_state
from .losses import transcript_ctc_loss

HELD_OUT = 48  # the pool's last texts: never trained on
EVAL_CHUNK = 8
POOL_TEXTS = 60000
DEFAULT_OPTIONS = {"projector_type": "mlp", "projector_hidden_size": 1024,
                   "frontend_config": {"posterior_head": "tied", "posterior_blank": True, "posterior_kernel": 4,
                                       "posterior_stride": 4}}


# ---- rows --------------------------------------------------------------------------------------------------------
def text_pool(seed: int, cache: Path | None = None) -> list[str]:
    """The run's sentences (deterministic in ``seed``; kept in ``cache`` once made: building takes a minute)."""
    from ..dataprep.corpora import build_text_pool

    if cache is not None and cache.is_file():
        return json.loads(cache.read_text(encoding="utf-8"))
    texts = [r["text"] for r in build_text_pool(POOL_TEXTS, seed, min_words=4, max_words=30)]
    if cache is not None:
        atomic_write_json(cache, texts)
    return texts


def row(texts: list[str], voices: list, seed: int, index: int) -> tuple[str, object]:
    """Row ``index``: (text, voice), a pure function of (seed, index); held-out texts never come up."""
    rng = random.Random(f"align:{seed}:{index}")
    return texts[rng.randrange(len(texts) - HELD_OUT)], voices[rng.randrange(len(voices))]


def _produce(queue, seed: int, start: int, voices_n: int, pool: Path) -> None:
    """Worker: rows ``start, start + 1, ...`` synthesised, as (index, text, audio) on ``queue`` (None: a row the engine
    refused, skipped)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    from ..dataprep.tts import synthesize
    from ..dataprep.voices import training_voices

    texts, voices = text_pool(seed, pool), training_voices(seed, voices_n)
    index = start
    while True:
        text, voice = row(texts, voices, seed, index)
        try:
            audio = synthesize(text, voice)
        except Exception:  # noqa: BLE001 - a TTS engine's refusal skips the row
            audio = None
        queue.put((index, text, audio))
        index += 1


def held_out(texts: list[str], voice_names=("joe", "espeak")) -> dict[str, list[tuple[str, np.ndarray]]]:
    from ..dataprep.tts import synthesize
    from ..eval.benchmark import evaluation_voice

    return {name: [(t, synthesize(t, evaluation_voice(name))) for t in texts[-HELD_OUT:]] for name in voice_names}


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

    def scores(self, states: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(clips, positions, vocab + 1) float32 scores, padded with zeros past each clip's ``lengths``: the head runs
        on the clips' positions packed together (no work on padding)."""
        lengths = torch.tensor([s.shape[0] for s in states])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            flat = self.frontend.scores(torch.cat(states), self.table)
        return torch.nn.utils.rnn.pad_sequence(flat.float().split(lengths.tolist()), batch_first=True), lengths


# ---- measures ----------------------------------------------------------------------------------------------------
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


def retrieval_matrix(scores: torch.Tensor, lengths: torch.Tensor, targets: list[torch.Tensor]) -> torch.Tensor:
    """(clips, texts) CTC loss per target token of every clip against every transcript. Only the target tokens' and
    the blank's log-probabilities enter CTC, so the vocabulary is cut to those columns after normalising."""
    log_probs = torch.log_softmax(scores.float(), dim=-1)
    columns = torch.unique(torch.cat(targets))
    blank = scores.shape[-1] - 1
    cut = torch.cat([log_probs[..., columns], log_probs[..., blank : blank + 1]], dim=-1)
    remap = {int(c): i for i, c in enumerate(columns.tolist())}
    mapped = [torch.tensor([remap[int(t)] for t in tgt]) for tgt in targets]
    n = len(targets)
    out = torch.empty(scores.shape[0], n)
    for i in range(scores.shape[0]):
        lp = cut[i : i + 1, : int(lengths[i])].expand(n, -1, -1).transpose(0, 1)
        loss = torch.nn.functional.ctc_loss(lp, torch.cat(mapped), torch.full((n,), int(lengths[i])),
                                            torch.tensor([len(t) for t in mapped]), blank=cut.shape[-1] - 1,
                                            reduction="none", zero_infinity=True)
        out[i] = loss / torch.tensor([len(t) for t in mapped]).float()
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
            rows.append(retrieval_matrix(scores, lengths, targets))
        loss = sum(losses) / len(items)
        matrix = torch.cat(rows)
        own = matrix.diagonal()
        ranks = (matrix < own.unsqueeze(1)).sum(1)  # texts scoring better than the clip's own
        others = (matrix.sum(1) - own) / (len(items) - 1)
        result[name] = {"ctc_loss": round(loss, 4), "token_error": round(errors / sum(len(t) for t in targets), 4),
                        "retrieval_top1": round(float((ranks == 0).float().mean()), 4),
                        "retrieval_top5": round(float((ranks < 5).float().mean()), 4),
                        "own_loss_per_token": round(float(own.mean()), 4),
                        "blind_loss_per_token": round(float(others.mean()), 4), "clips": len(items)}
    return result


# ---- checkpoints -------------------------------------------------------------------------------------------------
def save_checkpoint(out: Path, aligner: Aligner, optimizer, state: dict) -> None:
    folder = out / "checkpoint"
    folder.mkdir(parents=True, exist_ok=True)
    head = {k: v.detach().contiguous() for k, v in aligner.frontend.projector.state_dict().items()}
    atomic_save_tensors(head, folder / "head.safetensors")
    tensors, meta = flatten_state(optimizer.state_dict())
    atomic_save_tensors(tensors, folder / "optimizer.safetensors")
    atomic_write_json(folder / "state.json", {**state, "optimizer_meta": meta})  # last: the checkpoint is complete


def load_checkpoint(out: Path, aligner: Aligner, optimizer) -> dict | None:
    from safetensors.torch import load_file

    folder = out / "checkpoint"
    if not (folder / "state.json").is_file():
        return None
    state = json.loads((folder / "state.json").read_text())
    aligner.frontend.projector.load_state_dict(load_file(str(folder / "head.safetensors")))
    optimizer.load_state_dict(unflatten_state(load_file(str(folder / "optimizer.safetensors")), state.pop("optimizer_meta")))
    return state


def export(model_dir: Path, checkpoint: Path, dest: Path, note: str) -> Path:
    """A complete checkpoint: ``model_dir`` with the trained head (and provenance saying so)."""
    from safetensors.torch import load_file

    from ..modeling_audio_minichat import AudioMiniChatForConditionalGeneration

    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(model_dir, tmp)
    model = AudioMiniChatForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    model.audio_frontend.projector.load_state_dict(load_file(str(checkpoint / "head.safetensors")))
    model.config.provenance = {**(model.config.provenance or {}), "projector_trained": True, "projector_note": note}
    model.save_pretrained(tmp)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest


# ---- the run -----------------------------------------------------------------------------------------------------
BASE_NAME = "audio-minichat-posterior-ctc-untrained"  # the untrained build, in the model cache


def build_base() -> Path:
    """The untrained posterior checkpoint of DEFAULT_OPTIONS (built once into the model cache; deterministic)."""
    from ..assets.build_any import build_any
    from ..assets.offline import default_cache_dir

    base = default_cache_dir() / BASE_NAME
    if not (base / "config.json").is_file():
        build_any("smollm2-135m-instruct", "whisper-tiny.en", base, frontend="posterior", options=DEFAULT_OPTIONS, force=True)
    return base


def train(args) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    base = Path(args.model) if args.model else build_base()
    aligner = Aligner(base, bf16=args.bf16)
    optimizer = torch.optim.AdamW(aligner.head_params, lr=args.lr, weight_decay=0.0)
    state = load_checkpoint(out, aligner, optimizer) or {"step": 0, "next_row": 0, "seconds": 0.0, "rows": 0, "skipped": 0}
    if state["step"]:
        print(f"[align] resumed at step {state['step']} (row {state['next_row']})", flush=True)
    from ..assets.offline import default_cache_dir

    pool = default_cache_dir() / f"align-texts-seed{args.seed}.json"
    sets = held_out(text_pool(args.seed, pool))
    ctx = mp.get_context("fork")
    queue = ctx.Queue(maxsize=4 * args.batch)
    worker = ctx.Process(target=_produce, args=(queue, args.seed, state["next_row"], args.voices, pool), daemon=True)
    worker.start()
    progress = open(out / "progress.jsonl", "a", encoding="utf-8")
    budget = args.minutes * 60
    last_save = time.monotonic()
    started = time.monotonic() - state["seconds"]
    ema = None
    pending: dict[int, tuple] = {}
    try:
        if state["step"] == 0:
            record = {"step": 0, "rows": 0, "seconds": 0.0, "eval": evaluate(aligner, sets)}
            progress.write(json.dumps(record) + "\n")
            progress.flush()
            print(f"[align] step 0 {json.dumps(record['eval'])}", flush=True)
        while time.monotonic() - started < budget:
            batch = []
            while len(batch) < args.batch:  # rows in index order, whatever order the worker finished them
                while state["next_row"] not in pending:
                    index, text, audio = queue.get(timeout=300)
                    pending[index] = (text, audio)
                text, audio = pending.pop(state["next_row"])
                state["next_row"] += 1
                if audio is None or len(audio) > 30 * 16000:
                    state["skipped"] += 1
                    continue
                batch.append((text, audio))
            aligner.model.train(False)
            scores, lengths = aligner.scores(aligner.states([a for _, a in batch]))
            loss = transcript_ctc_loss(scores, lengths, aligner.targets([t for t, _ in batch]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(aligner.head_params, 1.0)
            optimizer.step()
            state["step"] += 1
            state["rows"] += len(batch)
            value = float(loss.detach())
            ema = value if ema is None else 0.95 * ema + 0.05 * value
            state["seconds"] = time.monotonic() - started
            if state["step"] % args.log_every == 0:
                print(f"[align] step {state['step']} rows {state['rows']} loss {ema:.3f} "
                      f"({state['rows'] / state['seconds']:.2f} rows/s)", flush=True)
            if state["step"] % args.eval_every == 0:
                record = {"step": state["step"], "rows": state["rows"], "seconds": round(state["seconds"], 1),
                          "train_loss": round(ema, 4), "eval": evaluate(aligner, sets)}
                progress.write(json.dumps(record) + "\n")
                progress.flush()
                print(f"[align] eval {json.dumps(record)}", flush=True)
            if time.monotonic() - last_save > args.save_every:
                save_checkpoint(out, aligner, optimizer, state)
                last_save = time.monotonic()
        save_checkpoint(out, aligner, optimizer, state)
        record = {"step": state["step"], "rows": state["rows"], "seconds": round(state["seconds"], 1),
                  "train_loss": None if ema is None else round(ema, 4), "eval": evaluate(aligner, sets), "final": True}
        progress.write(json.dumps(record) + "\n")
        print(f"[align] final {json.dumps(record)}", flush=True)
    finally:
        progress.close()
        worker.terminate()
    if args.export:
        note = (f"posterior head aligned by CTC on {state['rows']} synthetic rows ({state['step']} steps, "
                f"{state['seconds'] / 60:.0f} CPU minutes); training/align_posterior.py")
        print(export(base, out / "checkpoint", Path(args.export), note), flush=True)
    return state


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="the run's folder (progress.jsonl, checkpoint/, base/)")
    p.add_argument("--model", default=None, help="a posterior checkpoint with posterior_blank (default: the untrained build of DEFAULT_OPTIONS, "
                   "made once in the model cache)")
    p.add_argument("--minutes", type=float, default=30.0, help="training time budget (a resumed run counts its past)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--voices", type=int, default=300, help="training voices drawn (dataprep.voices.training_voices)")
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--save-every", type=float, default=300.0, help="seconds between checkpoints")
    p.add_argument("--bf16", action="store_true", help="the frozen encoder in bfloat16, the head under bfloat16 autocast "
                   "(on CPUs with native bfloat16: avx512_bf16 / AMX)")
    p.add_argument("--export", default=None, help="write a complete checkpoint with the trained head here at the end")
    return p.parse_args(argv)


def main(argv=None) -> int:
    train(parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
