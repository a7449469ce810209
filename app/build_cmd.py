"""``audio-minichat build --llm PATH|ID|FILE.gguf --asr PATH|ID --out DIR``: any chat LLM and any Whisper in one
command (the work is :func:`audio_minichat.assets.build_any.build_any`; this module is its command line)."""

from __future__ import annotations

from .choices import BUILD_FRONTENDS

EXAMPLES = """examples:
  audio-minichat build --llm SmolLM2-135M-Instruct.Q4_1.gguf --asr faster-whisper-tiny.en/ --out my-model
  audio-minichat build --llm Qwen/Qwen2.5-0.5B-Instruct --asr openai/whisper-base --out qwen-whisper   # hub ids
  audio-minichat build --llm ./my-llm --asr ./whisper-small --out my-model --frontend pool --force
  audio-minichat summarize talk.wav --model my-model --mode cascade

output:
  the checkpoint's folder on the first line, then which routes (--mode) it runs untrained and which need training.
  --llm: a causal LM folder (save_pretrained), a .gguf file (dequantised by transformers' GGUF loader), a hub id,
  or smollm2-135m-instruct. --asr: a Whisper folder (transformers, or CTranslate2: model.bin + config.json +
  tokenizer.json, as faster-whisper uses), a hub id, or whisper-tiny.en / whisper-base. docs/any-llm.md."""


def add_build_parser(sub) -> None:
    b = sub.add_parser("build", help="build a checkpoint from any chat LLM (folder, hub id, .gguf) and any Whisper",
                       description="Build an AudioMiniChat checkpoint from a chat LLM and a Whisper model, print its "
                                   "folder and which routes it runs untrained.", epilog=EXAMPLES)
    b.add_argument("--llm", required=True, metavar="PATH|ID|FILE.gguf", help="the frozen chat LLM")
    b.add_argument("--asr", required=True, metavar="PATH|ID", help="the Whisper model (transformers or CTranslate2 folder)")
    b.add_argument("--out", required=True, metavar="DIR", help="the checkpoint folder to write (new or empty)")
    b.add_argument("--frontend", default="asr_tokens", choices=BUILD_FRONTENDS,
                   help="how e2e hears: asr_tokens (Whisper's decoding as LLM token embeddings: runs untrained); pool, "
                        "stack, qformer (recognition-free: need training)")
    b.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="weights' dtype")
    b.add_argument("--force", action="store_true", help="replace the AudioMiniChat checkpoint already in --out")
    b.add_argument("--cache-dir", default=None, help="where offline names' conversions are cached (default: "
                   "$AUDIO_MINICHAT_CACHE or ~/.cache/audio_minichat)")
    b.add_argument("--quiet", action="store_true", help="no progress messages on stderr")


def run_build(args, step) -> dict:
    """Build; ``{"model": folder, "routes": the lines to print}``. ``step(message, quiet)`` prints progress."""
    import time

    from ..assets.build_any import build_any, format_routes
    from ..utils.dtypes import parse_dtype

    t0 = step(f"building {args.out} from --llm {args.llm} and --asr {args.asr} ({args.frontend})...", args.quiet)
    built = build_any(args.llm, args.asr, args.out, frontend=args.frontend, dtype=parse_dtype(args.dtype),
                      force=args.force, cache_dir=args.cache_dir)
    step(f"built ({time.perf_counter() - t0:.1f} s)", args.quiet)
    return {"model": str(built.out), "routes": format_routes(built)}


__all__ = ["add_build_parser", "run_build"]
