"""``python -m audio_minichat.app.align``: the posterior route's alignment stage (training/align_posterior.py) on
rows streamed by the data builder's TTS (dataprep/stream.py): the entry point that joins the two.

    python -m audio_minichat.app.align --out checkpoints/align/posterior_ctc --minutes 45 --bf16 \
        --ship assets/weights/posterior_ctc_projector.safetensors
"""

from __future__ import annotations

import argparse

from ..dataprep.stream import RowStream, held_out, text_pool
from ..training.align_posterior import evaluate_checkpoint, finish, initial_state, train


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="the run's folder (progress.jsonl, checkpoint/, base/)")
    p.add_argument("--model", default=None, help="a posterior checkpoint with posterior_blank (default: the untrained posterior_ctc build, "
                   "made once in the model cache)")
    p.add_argument("--minutes", type=float, default=30.0, help="training time budget (a resumed run counts its past)")
    p.add_argument("--steps", type=int, default=0, help="stop at this step as well (0: the time budget alone); a run "
                                                       "compared with another stops at the same step")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--negatives", type=int, default=4096,
                   help="sampled softmax: tokens drawn per step besides the batch's targets (0: the whole vocabulary)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--decay-from", type=int, default=None, help="rows seen when the learning rate starts to fall")
    p.add_argument("--decay-to", type=int, default=None, help="rows seen when it reaches --lr-floor x --lr")
    p.add_argument("--lr-floor", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--unique-rows", type=int, default=0, help="repeat the first N rows over and over (0: every row "
                   "fresh): the repeated-data arm of a data-vs-compute study; kept in the checkpoint")
    p.add_argument("--init-head", default=None, help="a fresh run starts from this run folder's head "
                   "(OUT/checkpoint/head.safetensors); weights the model's head has and it lacks (an attn_mlp head's "
                   "attention blocks, which start silent) keep the model's; kept in the checkpoint")
    p.add_argument("--first-row", type=int, default=0, help="a fresh run's first row (rows before it are another run's, "
                   "e.g. the --init-head run's next_row); kept in the checkpoint")
    p.add_argument("--voices", type=int, default=300, help="training voices drawn (dataprep.voices.training_voices)")
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--save-every", type=float, default=300.0, help="seconds between checkpoints")
    p.add_argument("--bf16", action="store_true", help="the frozen encoder in bfloat16, the head under bfloat16 autocast "
                   "(on CPUs with native bfloat16: avx512_bf16 / AMX)")
    p.add_argument("--evaluate-only", action="store_true",
                   help="append one evaluation of OUT's checkpoint to OUT/progress.jsonl and stop (no training)")
    p.add_argument("--ship", default=None, help="write the head here at the end as a build variant's trained weights "
                   "(safetensors + a .json of provenance)")
    p.add_argument("--ship-note", default=None, help="a sentence for the shipped weights' provenance (what the route is for)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    from ..assets.offline import default_cache_dir

    args = parse_args(argv)
    initial_state(args)
    pool = default_cache_dir() / f"align-texts-seed{args.seed}.json"
    sets = held_out(text_pool(args.seed, pool))
    if args.evaluate_only:
        evaluate_checkpoint(args, sets)
        finish(args)
        return 0
    stream = RowStream(args.seed, args.state["next_row"], args.voices, pool, queue_size=4 * args.batch,
                       unique_rows=args.unique_rows)
    try:
        train(args, stream, sets)
    finally:
        stream.close()
    finish(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
