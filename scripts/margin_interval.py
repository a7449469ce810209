"""How far apart two arms' hearing margins are, beyond the noise of the items: from a study's records
(``python -m audio_minichat.eval.study ... --out DIR``: DIR/records.jsonl), each arm's margin on a set (ROUGE-L against
the text system's answer to the same item, minus against its answers to the other items; metrics/hearing.py) with a
90 % interval from resampling the items, and each arm's difference from a baseline arm on the same resampled items
(paired: both arms answered the same items).

    python scripts/margin_interval.py --records benchmarks/study/records.jsonl --set prompts \
        --baseline posterior_ctc_conv_s1600_t05 --arms posterior_ctc_conv_cont1000_t05 posterior_ctc_attn1000_t05
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def per_item_margins(records: list[dict], arm: str, kind_set: str, score) -> dict[str, float]:
    """{item id: own - others} of the arm's e2e answers (the arm: a model folder's name) against the text answers."""
    from audio_minichat.metrics.hearing import hearing_margin

    targets = {r["id"]: r["output"] for r in records if r["model"] == "reference" and r["system"] == "text" and r["set"] == kind_set}
    answers = {r["id"]: r["output"] for r in records
               if Path(r["model"]).name == arm and r["system"] == "e2e" and r["set"] == kind_set}
    if not answers:
        raise SystemExit(f"no e2e answers of {arm!r} on {kind_set!r} in the records")
    ids = [i for i in targets if i in answers]
    margin = hearing_margin([answers[i] for i in ids], [targets[i] for i in ids], score)
    return dict(zip(ids, margin["per_item"]))


def interval(values: list[float], q: float = 0.05) -> tuple[float, float]:
    values = sorted(values)
    return values[int(q * len(values))], values[int((1 - q) * len(values)) - 1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", required=True)
    p.add_argument("--set", default="prompts", help="prompts or xsum")
    p.add_argument("--baseline", required=True)
    p.add_argument("--arms", nargs="+", required=True)
    p.add_argument("--resamples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from audio_minichat.eval.benchmark import load_rouge
    from audio_minichat.metrics.hearing import rouge_pairs

    records = [json.loads(line) for line in Path(args.records).read_text().splitlines() if line.strip()]
    score = rouge_pairs(load_rouge(), "rougeL")
    base = per_item_margins(records, args.baseline, args.set, score)
    rng = random.Random(args.seed)
    result = {}
    for arm in [args.baseline, *args.arms]:
        own = base if arm == args.baseline else per_item_margins(records, arm, args.set, score)
        ids = [i for i in base if i in own]
        draws, diffs = [], []
        for _ in range(args.resamples):
            pick = [rng.choice(ids) for _ in ids]
            draws.append(sum(own[i] for i in pick) / len(pick))
            diffs.append(sum(own[i] - base[i] for i in pick) / len(pick))
        mean = sum(own[i] for i in ids) / len(ids)
        diff = sum(own[i] - base[i] for i in ids) / len(ids)
        (lo, hi), (dlo, dhi) = interval(draws), interval(diffs)
        result[arm] = {"items": len(ids), "margin": round(mean, 2), "margin_90": [round(lo, 2), round(hi, 2)],
                       "minus_baseline": round(diff, 2), "minus_baseline_90": [round(dlo, 2), round(dhi, 2)]}
        print(f"{arm}: margin {mean:.2f} (90 %: {lo:.2f} - {hi:.2f}); minus {args.baseline}: {diff:+.2f} "
              f"(90 %: {dlo:+.2f} - {dhi:+.2f}), {len(ids)} items")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
