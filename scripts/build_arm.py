"""A study arm from an alignment run: the posterior build (``posterior_ctc_conv``'s options, or another projector type)
with the run's current head as its trained weights and a chosen read temperature, written as a model folder the
hearing study reads (``python -m audio_minichat.eval.study --models ARM``).

    python scripts/build_arm.py --run checkpoints/align/posterior_ctc_attn --projector-type attn_mlp \
        --temperature 0.5 --out ~/.cache/audio_minichat/arms/posterior_ctc_attn_t05

The head goes through the same files a shipped variant's does (``training.align_posterior.ship_weights``, then
``assets.default_build.build_model``), so an arm is exactly what shipping that head would build.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="an app.align run folder (its checkpoint/head.safetensors)")
    p.add_argument("--projector-type", default="conv_mlp", help="the run's head (configuration_audio_minichat.PROJECTOR_TYPES)")
    p.add_argument("--encoder", default=None, help="the run's encoder (default: the offline default, Whisper tiny.en; "
                   "whisper-base for a base run)")
    p.add_argument("--temperature", type=float, default=0.5, help="the read temperature (posterior_temperature)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    from audio_minichat.assets.builds import POSTERIOR_CTC_CONV_KWARGS
    from audio_minichat.assets.default_build import DEFAULT_ENCODER, DEFAULT_LLM, build_model
    from audio_minichat.training.align_posterior import head_file, ship_weights

    run = Path(args.run)
    if not head_file(run).is_file():
        raise SystemExit(f"--run {run}: no {head_file(run)} (an app.align run folder)")
    kwargs = {**POSTERIOR_CTC_CONV_KWARGS, "projector_type": args.projector_type,
              "frontend_config": {**POSTERIOR_CTC_CONV_KWARGS["frontend_config"], "posterior_temperature": args.temperature}}
    with tempfile.TemporaryDirectory() as tmp:
        weights = ship_weights(run, Path(tmp) / "head.safetensors", {"run": str(run)})
        print(build_model(DEFAULT_LLM, args.encoder or DEFAULT_ENCODER, Path(args.out).expanduser(), projector_weights=weights, **kwargs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
