"""WER of an asr_tokens model's internal Whisper decoding on the spoken XSum benchmark documents.

    python scripts/asr_tokens_wer.py [--model DIR] [--num-docs 100] [--voices joe,espeak] [--out FILE.json]

The e2e system reads Whisper's decoding as embeddings; this measures that decoding as text (the tokens the model
writes, decoded with Whisper's tokenizer), against the same documents and with the same WER as the benchmark's
cascade row. Needs the benchmark's cached speech (``python -m audio_minichat.eval.benchmark`` synthesizes it).
"""

import argparse
import json
from pathlib import Path

import soundfile as sf
import torch

from audio_minichat.assets.default_build import build_default
from audio_minichat.eval.benchmark import DEFAULT_CACHE, load_documents, select_documents
from audio_minichat.metrics.wer import word_error_rate
from audio_minichat.modeling_audio_minichat import AudioMiniChatForConditionalGeneration
from audio_minichat.processing_audio_minichat import AudioMiniChatProcessor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="an asr_tokens checkpoint (default: the offline default)")
    ap.add_argument("--num-docs", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--voices", default="joe,espeak")
    ap.add_argument("--cache-dir", default=str(DEFAULT_CACHE))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    model_dir = args.model or str(build_default())
    model = AudioMiniChatForConditionalGeneration.from_pretrained(model_dir, dtype=torch.bfloat16).eval()
    if not hasattr(model.audio_frontend, "asr_decoder"):
        raise SystemExit(f"{model_dir}: audio_frontend is {model.config.audio_frontend!r}: its front end decodes no ASR tokens")
    processor = AudioMiniChatProcessor.from_pretrained(model_dir)
    asr_tokenizer = processor.asr_tokenizer
    docs = select_documents(load_documents(), args.num_docs, args.seed)
    prompt = processor.build_prompt(processor.audio_with_text(None))
    results = {}
    for voice in args.voices.split(","):
        refs, hyps = [], []
        for doc in docs:
            path = Path(args.cache_dir).expanduser() / voice / f"{doc['id']}.wav"
            if not path.is_file():
                raise SystemExit(f"{path}: missing; run the benchmark for voice {voice!r} first")
            audio, rate = sf.read(path, dtype="float32")
            inputs = processor(text=prompt, audio=audio, sampling_rate=rate)
            with torch.no_grad():
                tokens = model.get_audio_features(inputs["input_features"].to(torch.bfloat16), inputs["input_features_mask"],
                                                  inputs["audio_window_clip"]).token_ids
            refs.append(doc["document"])
            hyps.append(asr_tokenizer.decode(tokens[0]).strip())
        results[voice] = {"docs": len(docs), "wer": word_error_rate(refs, hyps)}
        print(f"{voice}: WER {100 * results[voice]['wer']:.1f}% over {len(docs)} documents", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"model": model_dir, **results}, indent=2))


if __name__ == "__main__":
    main()
