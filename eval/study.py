"""Content measures of the hearing study (docs/hearing-study.md), no LLM judge: for each model's e2e route,

- spoken XSum on a fixed document subset read by one voice (default: the unseen ``joe``, 20 documents, seed 0):
  ROUGE-1/2/L against the reference summaries and ROUGE-L against the text system's summary of the same document;
- answer agreement on spoken prompts (``eval/data/spoken_prompts.json``: requests, questions and short stories to
  summarize, each read aloud as the whole prompt): ROUGE-L of the answer to the audio against the same LLM's answer
  to the same words as text.

The text answers (the frozen LLM on the words) and the cascade (Whisper's transcript, then the LLM) are computed once
with ``--reference`` (default: the offline default build) and reused. Outputs are appended per record to
``OUT/records.jsonl`` (a rerun skips what is done) and summarized in ``OUT/summary.json`` / ``summary.md``: every
model with records there, this run's and earlier ones'.

    python -m audio_minichat.eval.study --models runs/study/pool_baseline/final runs/study/qformer_dense/final \\
        --out benchmarks/study
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

from ..metrics.hearing import hearing_margin, rouge_pairs
from ..utils.io import atomic_write, atomic_write_json, atomic_write_text
from .benchmark import (DEFAULT_CACHE, DEFAULT_PROMPT, load_documents, load_rouge, select_documents,
                        synthesize_documents)

PROMPTS_FILE = Path(__file__).resolve().parent / "data" / "spoken_prompts.json"


def spoken_prompts(path: Path = PROMPTS_FILE) -> list[dict]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    items = data["prompts"]
    ids = [p["id"] for p in items]
    if len(set(ids)) != len(ids) or not all(p.get("text", "").strip() for p in items):
        raise ValueError(f"{path}: every prompt needs a unique id and non-empty text")
    return items


def synthesize_prompts(items: list[dict], voice_name: str, cache_dir: Path) -> dict[str, Path]:
    """Each prompt read once by ``voice_name`` (cached by its text's digest)."""
    from ..dataprep.tts import synthesize, write_wav
    from .benchmark import evaluation_voice

    voice = evaluation_voice(voice_name)
    folder = cache_dir / f"prompts-{voice_name}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for item in items:
        digest = hashlib.sha1(item["text"].encode()).hexdigest()[:10]
        path = folder / f"{item['id']}-{digest}.wav"
        if not path.exists():
            audio = synthesize(item["text"], voice)
            atomic_write(path, lambda tmp: write_wav(tmp, audio), suffix=".wav")
        paths[item["id"]] = path
    return paths


def _load(path: Path) -> dict:
    done = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill
                continue
            done[(rec["model"], rec["system"], rec["set"], rec["id"])] = rec
    return done


def weights_id(model_dir) -> str:
    """A digest of a checkpoint's weights (its trained tensors where the run saved them apart, else all of them): an
    e2e record answers for the weights it was made with, so a folder trained further is measured again."""
    folder = Path(model_dir)
    path = folder / "trained_weights.safetensors"
    path = path if path.is_file() else folder / "model.safetensors"
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def drop_stale(done: dict, key: str, system: str, weights: str | None) -> int:
    """Forget the records of ``key``'s ``system`` made with other weights than ``weights`` (records from before
    weights were recorded are kept); returns how many were dropped."""
    stale = [k for k, rec in done.items() if k[0] == key and k[1] == system and rec.get("weights", weights) != weights]
    for k in stale:
        del done[k]
    return len(stale)


def recorded_models(done: dict, models: list[str]) -> list[str]:
    """The e2e models a summary covers: every one with records in the run's folder, in the order first measured
    (earlier sittings' arms included), then ``models`` not measured yet."""
    keys = list(dict.fromkeys(k[0] for k in done if k[1] == "e2e"))
    return keys + [m for m in (str(Path(m)) for m in models) if m not in keys]


def _margin(rouge, preds: list[str], targets: list[str], kind: str) -> float | None:
    """The hearing margin (metrics/hearing.py): own item's target minus the other items' targets."""
    if len(preds) < 2:
        return None
    return round(hearing_margin(preds, targets, rouge_pairs(rouge, kind))["margin"], 2)


def _rouge(rouge, preds: list[str], refs: list[str], kinds=("rouge1", "rouge2", "rougeL")) -> dict[str, float]:
    if not preds:
        return {k: None for k in kinds}
    scores = rouge.compute(predictions=preds, references=refs, use_stemmer=True, rouge_types=list(kinds))
    return {k: round(100 * float(scores[k]), 2) for k in kinds}


def run(args) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import soundfile as sf

    from ..inference.speech_llm import SpeechLLM

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(args.cache_dir).expanduser()
    docs = select_documents(load_documents(80, 400), args.num_docs, args.seed)
    synthesize_documents(docs, args.voice, cache, progress=False)
    prompts = spoken_prompts(Path(args.prompts))
    prompt_audio = synthesize_prompts(prompts, args.voice, cache)
    sets = {
        "xsum": [(d["id"], d["document"], cache / args.voice / f"{d['id']}.wav", DEFAULT_PROMPT, args.max_new_tokens) for d in docs],
        "prompts": [(p["id"], p["text"], prompt_audio[p["id"]], None, args.prompt_max_new_tokens) for p in prompts],
    }
    records_path = out / "records.jsonl"
    done = _load(records_path)
    reference = args.reference
    if reference is None:
        from ..assets.default_build import build_default

        reference = str(build_default())
    jobs = [(reference, "text"), (reference, "cascade")] + [(m, "e2e") for m in args.models]
    with open(records_path, "a", encoding="utf-8") as sink:
        for model_dir, system in jobs:
            key = "reference" if system != "e2e" else str(Path(model_dir))
            wid = weights_id(model_dir) if system == "e2e" else None
            drop_stale(done, key, system, wid)
            todo = [(s, item) for s, items in sets.items() for item in items if (key, system, s, item[0]) not in done]
            if not todo:
                continue
            llm = SpeechLLM(model_dir, dtype=args.dtype)
            for i, (set_name, (item_id, words, wav, prompt, max_new)) in enumerate(todo):
                start = time.perf_counter()
                if system == "text":
                    answer = llm.text(words, prompt, max_new_tokens=max_new)
                else:
                    audio, rate = sf.read(str(wav), dtype="float32")
                    answer = getattr(llm, system)(audio, prompt, max_new_tokens=max_new, sampling_rate=rate)
                rec = {"model": key, "system": system, "set": set_name, "id": item_id, "output": answer.text,
                       "seconds": round(time.perf_counter() - start, 2), **({"weights": wid} if wid else {})}
                sink.write(json.dumps(rec) + "\n")
                sink.flush()
                done[(key, system, set_name, item_id)] = rec
                print(f"[study] {system} {Path(model_dir).parent.name if system == 'e2e' else 'reference'} {set_name} "
                      f"{i + 1}/{len(todo)} ({rec['seconds']} s)", flush=True)
            del llm
    return summarize(done, docs, sets, args, out)


def summarize(done: dict, docs: list[dict], sets: dict, args, out: Path) -> dict:
    rouge = load_rouge()
    refs = {d["id"]: d["summary"] for d in docs}
    text = {(s, i): done[("reference", "text", s, i)]["output"] for s, items in sets.items() for i, *_ in items}
    rows = []
    for key, system in [("reference", "text"), ("reference", "cascade")] + [(m, "e2e") for m in recorded_models(done, args.models)]:
        row = {"model": key, "system": system}
        for set_name, items in sets.items():
            ids = [i for i, *_ in items if (key, system, set_name, i) in done]
            preds = [done[(key, system, set_name, i)]["output"] for i in ids]
            if set_name == "xsum":
                row.update({f"xsum_{k}": v for k, v in _rouge(rouge, preds, [refs[i] for i in ids]).items()})
                row["xsum_rougeL_vs_text"] = _rouge(rouge, preds, [text[("xsum", i)] for i in ids], ("rougeL",))["rougeL"]
                row["xsum_rouge1_margin"] = _margin(rouge, preds, [refs[i] for i in ids], "rouge1")
                row["xsum_vs_text_margin"] = (None if system == "text" else
                                              _margin(rouge, preds, [text[("xsum", i)] for i in ids], "rougeL"))
                row["xsum_docs"] = len(ids)
            else:
                row["agreement_rougeL"] = _rouge(rouge, preds, [text[("prompts", i)] for i in ids], ("rougeL",))["rougeL"]
                row["agreement_margin"] = (None if system == "text" else
                                           _margin(rouge, preds, [text[("prompts", i)] for i in ids], "rougeL"))
                row["prompts"] = len(ids)
        rows.append(row)
    summary = {"voice": args.voice, "num_docs": args.num_docs, "seed": args.seed, "max_new_tokens": args.max_new_tokens,
               "prompt_max_new_tokens": args.prompt_max_new_tokens, "rows": rows}
    atomic_write_json(out / "summary.json", summary)
    lines = ["Margin: the hearing margin (score against the item's own target minus against the other items'; "
             "metrics/hearing.py). ~0: the answers do not follow the speech, whatever their ROUGE.", "",
             "| model | system | XSum R-1 | R-1 margin | R-2 | R-L | R-L vs text | vs-text margin | prompts: R-L vs text "
             "| prompts margin |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        parts = Path(r["model"]).parts
        # a run's final/ folder by its run (arm/run), a built checkpoint by its own folder name
        name = "reference" if r["model"] == "reference" else ("/".join(parts[-3:-1]) if parts[-1] == "final" else parts[-1])
        lines.append(f"| {name} | {r['system']} | {r['xsum_rouge1']} | {r.get('xsum_rouge1_margin')} | "
                     f"{r['xsum_rouge2']} | {r['xsum_rougeL']} | {r['xsum_rougeL_vs_text']} | "
                     f"{r.get('xsum_vs_text_margin')} | {r['agreement_rougeL']} | {r.get('agreement_margin')} |")
    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return summary


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", default=[], help="checkpoint folders whose e2e route is measured")
    p.add_argument("--reference", default=None, help="the checkpoint of the text and cascade answers (default: offline default)")
    p.add_argument("--out", default="benchmarks/study")
    p.add_argument("--voice", default="joe")
    p.add_argument("--num-docs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=60, help="XSum summaries (the benchmark's budget)")
    p.add_argument("--prompt-max-new-tokens", type=int, default=96, help="answers to the spoken prompts")
    p.add_argument("--prompts", default=str(PROMPTS_FILE))
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE))
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--rescore", action="store_true",
                   help="the summary again from OUT/records.jsonl with the current measures: no model, no speech")
    return p.parse_args(argv)


def rescore(args) -> dict:
    """summary.json / summary.md from the records alone: the items are those the reference's text records cover."""
    out = Path(args.out)
    done = _load(out / "records.jsonl")
    if not done:
        raise SystemExit(f"study: {out / 'records.jsonl'} has no records to rescore")
    docs = select_documents(load_documents(80, 400), args.num_docs, args.seed)
    sets = {name: [(i,) for (m, sysname, s, i) in done if m == "reference" and sysname == "text" and s == name]
            for name in ("xsum", "prompts")}
    return summarize(done, docs, sets, args, out)


def main(argv=None) -> int:
    args = parse_args(argv)
    rescore(args) if args.rescore else run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
