"""Do the llama.cpp route's answers keep the quality of the transformers route's (issue 26, point 4)?

The same 20 spoken XSum documents (eval/benchmark.py's seeded draw, read by the `joe` voice), the same prompt and
token limit, answered by the text mode, the cascade and e2e (``--modes``) of each route: transformers (SpeechLLM at the command line's
default --dtype auto) and llama.cpp (GgufSpeechLLM: the checkpoint's GGUF file, Whisper in CTranslate2). Reported per
route and mode: R-1 / R-L against the reference summaries, R-L of a spoken mode against the same route's text answer
(and, as the control a fixed sentence cannot pass, against the text answers to the *other* documents: the margin),
the loop rate (metrics.repetition) and the mean time per answer; and between routes: R-L of llama.cpp's answers
against transformers' on the same input.

    python scripts/llm_backend_quality.py --num-docs 20 --out benchmarks/llm_backend/quality.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num-docs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--voice", default="joe")
    p.add_argument("--max-new-tokens", type=int, default=60)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--model", default=None, help="checkpoint (default: the offline default)")
    p.add_argument("--modes", default="text,cascade", help="comma-separated: text (always run: the spoken modes' target), cascade, e2e")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "llm_backend" / "quality.json"))
    args = p.parse_args(argv)
    modes = ["text"] + [m for m in args.modes.split(",") if m and m != "text"]
    unknown = sorted(set(modes) - {"text", "cascade", "e2e"})
    if unknown:
        raise SystemExit(f"llm_backend_quality: unknown mode(s) {', '.join(unknown)}: text, cascade, e2e")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import soundfile as sf
    import torch

    from audio_minichat.eval.benchmark import (DEFAULT_CACHE, DEFAULT_PROMPT, load_documents, load_rouge,
                                               select_documents, synthesize_documents)
    from audio_minichat.inference.gguf_cascade import GgufSpeechLLM
    from audio_minichat.inference.speech_llm import SpeechLLM
    from audio_minichat.metrics.repetition import loop_rate

    torch.set_num_threads(args.threads)
    if args.model is None:
        from audio_minichat.assets.default_build import build_default

        args.model = str(build_default())
    docs = select_documents(load_documents(80, 400), args.num_docs, args.seed)
    cache = DEFAULT_CACHE.expanduser()
    synthesize_documents(docs, args.voice, cache, progress=False)
    routes = {"transformers": SpeechLLM(args.model, dtype="auto"), "llama.cpp": None}
    routes["transformers"].transcribe(str(cache / args.voice / f"{docs[0]['id']}.wav"))  # the CTranslate2 folder
    routes["llama.cpp"] = GgufSpeechLLM(args.model, threads=args.threads)
    answers: dict[tuple[str, str], list[str]] = {}
    seconds: dict[tuple[str, str], list[float]] = {}
    transcripts: dict[str, list[str]] = {}
    for name, llm in routes.items():
        for mode in modes:
            out, took = [], []
            for i, doc in enumerate(docs, start=1):
                start = time.perf_counter()
                if mode == "text":
                    answer = llm.text(doc["document"], DEFAULT_PROMPT, max_new_tokens=args.max_new_tokens)
                else:
                    audio, rate = sf.read(str(cache / args.voice / f"{doc['id']}.wav"), dtype="float32")
                    answer = getattr(llm, mode)(audio, DEFAULT_PROMPT, max_new_tokens=args.max_new_tokens, sampling_rate=rate)
                    if mode == "cascade":
                        transcripts.setdefault(name, []).append(answer.transcript)
                took.append(time.perf_counter() - start)
                out.append(answer.text)
                print(f"[quality] {name} {mode} {i}/{len(docs)} {took[-1]:.1f} s", file=sys.stderr, flush=True)
            answers[(name, mode)], seconds[(name, mode)] = out, took
    rouge = load_rouge()

    def score(preds, refs, key):
        return round(100 * rouge.compute(predictions=preds, references=refs, use_stemmer=True)[key], 2)

    refs = [d["summary"] for d in docs]
    rows = []
    for (name, mode), preds in answers.items():
        text = answers[(name, "text")]
        row = {"route": name, "mode": mode, "rouge1": score(preds, refs, "rouge1"), "rougeL": score(preds, refs, "rougeL"),
               "loop_rate": round(100 * loop_rate(preds), 1), "median_s": round(statistics.median(seconds[(name, mode)]), 2)}
        if mode != "text":
            own = score(preds, text, "rougeL")
            n = len(preds)
            others = statistics.mean(score(preds, text[k:] + text[:k], "rougeL") for k in range(1, n))
            row.update({"rougeL_vs_text": own, "rougeL_vs_other_texts": round(others, 2), "margin": round(own - others, 2)})
        rows.append(row)
    between = {mode: score(answers[("llama.cpp", mode)], answers[("transformers", mode)], "rougeL") for mode in modes}
    same = {mode: sum(a == b for a, b in zip(answers[("llama.cpp", mode)], answers[("transformers", mode)])) for mode in modes}
    result = {"config": {**vars(args), "prompt": DEFAULT_PROMPT, "doc_ids": [d["id"] for d in docs],
                         "transcripts_equal": transcripts.get("llama.cpp") == transcripts.get("transformers")},
              "rows": rows, "rougeL_llama_vs_transformers": between, "identical_answers": same,
              "answers": {f"{k[0]}/{k[1]}": v for k, v in answers.items()}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print("| route | mode | R-1 | R-L | R-L vs its text (others, margin) | loop % | median s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        vs = f"{r['rougeL_vs_text']} ({r['rougeL_vs_other_texts']}, {r['margin']})" if "margin" in r else "-"
        print(f"| {r['route']} | {r['mode']} | {r['rouge1']} | {r['rougeL']} | {vs} | {r['loop_rate']} | {r['median_s']} |")
    print(f"R-L llama.cpp vs transformers, same input: {between}; identical answers: {same} of {len(docs)}; "
          f"transcripts equal: {result['config']['transcripts_equal']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
