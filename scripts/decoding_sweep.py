"""Decoding settings side by side, for all three modes: loop rate and ROUGE on spoken XSum.

    python scripts/decoding_sweep.py --num-docs 20 --voice joe --out benchmarks/decoding_sweep.json
    python scripts/decoding_sweep.py --validation data/val240 --out benchmarks/decoding_validation.json

With ``--validation DIR`` (a ``python -m audio_minichat.dataprep`` output) the requests are the data set's validation
rows instead: each row's own prompt, with its audio (e2e), Whisper's transcript of it (cascade) or its transcript
(text) in place of the placeholder; the measure is the agreement with the text answer (ROUGE-L) and the loop rate.

For each setting (a set of ``GenerationConfig`` fields laid over the checkpoint's), every document is answered as
text, through the cascade (Whisper's transcript, computed once) and end to end (the audio embedded once); reported
per mode: ROUGE-1/2/L against the human summary, ROUGE-L against the text mode's answer under the same setting, and
the loop rate (share of answers repeating a 4-gram 3 or more times, ``metrics.repetition``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import soundfile as sf
import torch

from audio_minichat.assets.default_build import build_default
from audio_minichat.eval.benchmark import (
    DEFAULT_CACHE,
    DEFAULT_PROMPT,
    load_documents,
    load_rouge,
    select_documents,
    synthesize_documents,
)
from audio_minichat.inference import SpeechLLM
from audio_minichat.metrics.repetition import loop_rate

SETTINGS = {
    "greedy": {},
    "no_repeat_4gram": {"no_repeat_ngram_size": 4},
    "repetition_penalty_1.2": {"repetition_penalty": 1.2},
    "rp_1.1+no_repeat_4gram": {"repetition_penalty": 1.1, "no_repeat_ngram_size": 4},
    "answer_no_repeat_4gram": {"answer_no_repeat_ngram_size": 4},  # within the answer only (the model's generate)
    "answer_no_repeat_3gram": {"answer_no_repeat_ngram_size": 3},
}


def use_setting(model, base: dict, setting: dict) -> None:
    """The checkpoint's generation config with ``setting``'s fields laid over it (fields transformers does not know,
    such as the model's answer_no_repeat_ngram_size, are set as attributes: from_dict would drop them)."""
    config = type(model.generation_config).from_dict(dict(base))
    for key, value in setting.items():
        setattr(config, key, value)
    model.generation_config = config


def validation_requests(llm, data_dir: str, limit: int | None):
    """(id, prompt with a placeholder, clip, transcript) of a built data set's validation rows."""
    from audio_minichat.training import DataConfig, decode_audio, load_rows

    rows = load_rows(data_dir, "validation", limit)
    cols = DataConfig()
    return [(str(i), r[cols.prompt_column], decode_audio(r[cols.audio_column], f"row {i}"), r[cols.transcript_column])
            for i, r in enumerate(rows)]


def run_validation(args, llm) -> dict:
    model, processor = llm.model, llm.processor
    base = model.generation_config.to_dict()
    requests = validation_requests(llm, args.validation, args.num_docs)
    heard = {rid: llm.transcribe(clip, sampling_rate=16000).text for rid, _, clip, _ in requests}
    rouge = load_rouge()
    results = {}
    for name in args.settings.split(","):
        use_setting(model, base, SETTINGS[name])
        answers = {"text": [], "cascade": [], "e2e": []}
        for rid, prompt, clip, transcript in requests:
            for mode, filling in (("text", transcript), ("cascade", heard[rid])):
                inputs = processor(text=processor.build_prompt(prompt, transcripts=[filling]))
                answers[mode].append(llm._generate(inputs, args.max_new_tokens)[0])
            inputs = processor(text=processor.build_prompt(prompt), audio=clip, sampling_rate=16000)
            answers["e2e"].append(llm._generate(inputs, args.max_new_tokens)[0])
        row = {}
        for mode, preds in answers.items():
            entry = {"loop_rate": round(100 * loop_rate(preds), 1)}
            if mode != "text":
                entry["rougeL_vs_text"] = round(100 * float(rouge.compute(predictions=preds, references=answers["text"],
                                                                          use_stemmer=True)["rougeL"]), 2)
            row[mode] = entry
        results[name] = {"generation": SETTINGS[name], "modes": row}
        print(f"[validation] {name}: " + "; ".join(f"{m} {e}" for m, e in row.items()), flush=True)
    return {"model": str(llm.model_dir), "data": args.validation, "rows": len(requests), "max_new_tokens": args.max_new_tokens,
            "threads": torch.get_num_threads(), "settings": results}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--num-docs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--voice", default="joe")
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--cache-dir", default=str(DEFAULT_CACHE))
    ap.add_argument("--out", default=None)
    ap.add_argument("--validation", default=None, help="a built data set: measure on its validation rows instead")
    args = ap.parse_args()
    if args.validation:
        report = run_validation(args, SpeechLLM(args.model or build_default()))
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=2))
        return
    docs = select_documents(load_documents(), args.num_docs, args.seed)
    cache = Path(args.cache_dir).expanduser()
    synthesize_documents(docs, args.voice, cache)
    llm = SpeechLLM(args.model or build_default())
    model, processor = llm.model, llm.processor
    base = model.generation_config.to_dict()
    prompt = processor.build_prompt(processor.audio_with_text(DEFAULT_PROMPT))
    t0 = time.perf_counter()
    transcripts, embedded = {}, {}
    for doc in docs:  # what does not depend on the decoding: Whisper's transcript, the audio embeddings
        audio, rate = sf.read(str(cache / args.voice / f"{doc['id']}.wav"), dtype="float32")
        transcripts[doc["id"]] = llm.transcribe(audio, sampling_rate=rate).text
        inputs = processor(text=prompt, audio=audio, sampling_rate=rate)
        with torch.no_grad():
            embeds, mask, _ = model.embed_inputs(inputs["input_ids"], inputs["input_features"], inputs["input_features_mask"],
                                                 inputs["audio_window_clip"], attention_mask=inputs["attention_mask"])
        embedded[doc["id"]] = (inputs["input_ids"], embeds, mask)
    print(f"[sweep] transcripts and audio embeddings of {len(docs)} documents: {time.perf_counter() - t0:.0f} s", flush=True)
    rouge = load_rouge()
    results = {}
    for name in args.settings.split(","):
        use_setting(model, base, SETTINGS[name])
        t0 = time.perf_counter()
        answers = {"text": [], "cascade": [], "e2e": []}
        for doc in docs:
            answers["text"].append(llm.text(doc["document"], DEFAULT_PROMPT, max_new_tokens=args.max_new_tokens).text)
            answers["cascade"].append(llm.text(transcripts[doc["id"]], DEFAULT_PROMPT, max_new_tokens=args.max_new_tokens).text)
            ids, embeds, mask = embedded[doc["id"]]
            with torch.no_grad():
                out = model.generate(input_ids=ids, inputs_embeds=embeds, attention_mask=mask, max_new_tokens=args.max_new_tokens)
            answers["e2e"].append(processor.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)[0].strip())
        refs = [d["summary"] for d in docs]
        row = {}
        for mode, preds in answers.items():
            scores = rouge.compute(predictions=preds, references=refs, use_stemmer=True)
            entry = {k: round(100 * float(scores[k]), 2) for k in ("rouge1", "rouge2", "rougeL")}
            if mode != "text":
                entry["rougeL_vs_text"] = round(100 * float(rouge.compute(predictions=preds, references=answers["text"],
                                                                          use_stemmer=True)["rougeL"]), 2)
            entry["loop_rate"] = round(100 * loop_rate(preds), 1)
            row[mode] = entry
        results[name] = {"generation": SETTINGS[name], "modes": row, "seconds": round(time.perf_counter() - t0, 1),
                         "examples": {m: a[:2] for m, a in answers.items()}}
        print(f"[sweep] {name}: " + "; ".join(f"{m} R-1 {e['rouge1']:.1f} R-L {e['rougeL']:.1f} loops {e['loop_rate']:.0f}%"
                                            for m, e in row.items()), flush=True)
    report = {"model": str(llm.model_dir), "voice": args.voice, "num_docs": len(docs), "seed": args.seed,
              "max_new_tokens": args.max_new_tokens, "threads": torch.get_num_threads(), "settings": results}
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
