"""The posterior route's read temperature, chosen on held-out sentences (never on the evaluation sets).

For each temperature, the e2e answer to each held-out sentence (dataprep.stream.held_out: the alignment run's 48
held-out texts read by ``joe`` and by espeak-ng, in neither the study's prompts nor spoken XSum) is scored by ROUGE-L
against the text answer to the same sentence, and against the text answers to the other sentences: the hearing
margin (metrics/hearing.py), which a constant or generic answer cannot pass. The temperature with the best mean
margin over both voices is the one to read at (``posterior_temperature`` in assets/default_build.py).

    python scripts/posterior_temperature.py --model ~/.cache/audio_minichat/audio-minichat-posterior_ctc \
        --temperatures 0.3 0.5 0.7 1.0 --items 24 --out benchmarks/posterior_temperature.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a posterior checkpoint")
    p.add_argument("--temperatures", type=float, nargs="+", default=[0.3, 0.5, 0.7, 1.0])
    p.add_argument("--items", type=int, default=24, help="held-out sentences per voice (the first N)")
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--seed", type=int, default=0, help="the alignment run's seed (its text pool)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    from audio_minichat.dataprep.stream import held_out, text_pool
    from audio_minichat.eval.benchmark import load_rouge
    from audio_minichat.inference.speech_llm import DEFAULT_SUMMARY_PROMPT, SpeechLLM
    from audio_minichat.metrics.hearing import hearing_margin, rouge_pairs
    from audio_minichat.utils.io import atomic_write_json, default_cache_dir

    sets = held_out(text_pool(args.seed, default_cache_dir() / f"align-texts-seed{args.seed}.json"))
    llm = SpeechLLM(args.model, dtype="auto", check_speech=False)
    frontend = llm.model.audio_frontend
    rouge = load_rouge()
    score = rouge_pairs(rouge, "rougeL")
    texts = [t for t, _ in sets["joe"][: args.items]]
    targets = [llm.text(t, DEFAULT_SUMMARY_PROMPT, max_new_tokens=args.max_new_tokens).text for t in texts]
    result = {"model": str(args.model), "items": args.items, "max_new_tokens": args.max_new_tokens,
              "prompt": DEFAULT_SUMMARY_PROMPT, "temperatures": {}}
    for temperature in args.temperatures:
        frontend.options = dataclasses.replace(frontend.options, posterior_temperature=temperature)
        row = {}
        for voice, items in sets.items():
            start = time.perf_counter()
            answers = [llm.e2e(audio, DEFAULT_SUMMARY_PROMPT, max_new_tokens=args.max_new_tokens, sampling_rate=16000).text
                       for _, audio in items[: args.items]]
            margin = hearing_margin(answers, targets, score)
            row[voice] = {"own": round(margin["own"], 2), "others": round(margin["others"], 2),
                          "margin": round(margin["margin"], 2), "empty": sum(not a.strip() for a in answers),
                          "seconds": round(time.perf_counter() - start, 1), "answers": answers[:3]}
        row["mean_margin"] = round(sum(row[v]["margin"] for v in sets) / len(sets), 2)
        result["temperatures"][str(temperature)] = row
        print(f"[temperature] {temperature}: " + ", ".join(f"{v} margin {row[v]['margin']} (own {row[v]['own']}, "
                                                            f"others {row[v]['others']})" for v in sets), flush=True)
    best = max(result["temperatures"], key=lambda t: result["temperatures"][t]["mean_margin"])
    result["best"] = float(best)
    result["text_answers"] = targets[:3]
    atomic_write_json(Path(args.out), result)
    print(f"[temperature] best {best} (mean margin {result['temperatures'][best]['mean_margin']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
