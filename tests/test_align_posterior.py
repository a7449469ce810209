"""training/align_posterior.py: the CTC alignment stage of the posterior route (no LLM, no teacher in the step).

A tiny random Whisper + Llama posterior model (tied head, blank) saved to disk: the CTC loss is torch's on the
transcript's LLM tokens with the blank last; the retrieval probe's diagonal is each clip's own CTC loss per token; the
head alone learns (it overfits two clips until its best path writes their transcripts) while the encoder and the LLM
stay as they were; a checkpoint (head + optimizer state, safetensors) resumes exactly; the shipped weights are the
checkpoint's head under the build's names (projector.*); the learning rate is a function of the rows seen; rows are a pure function of (seed, index) and never held-out texts.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import make_model, speechlike, tolerances
from safetensors.torch import load_file

from audio_minichat.dataprep import stream
from audio_minichat.training import align_posterior as ap
from audio_minichat.training.losses import transcript_ctc_loss, transcript_ctc_matrix

CTC = {"posterior_head": "tied", "posterior_blank": True, "posterior_kernel": 2, "posterior_stride": 2}


def saved_model(tmp_path):
    model, processor = make_model("whisper", audio_frontend="posterior", frontend_config=CTC)
    folder = tmp_path / "base"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_ctc_loss_is_torchs_with_the_blank_last():
    torch.manual_seed(0)
    scores = torch.randn(2, 7, 11)
    targets = [torch.tensor([3, 4, 4]), torch.tensor([1])]
    lengths = torch.tensor([7, 5])
    expected = torch.nn.functional.ctc_loss(scores.log_softmax(-1).transpose(0, 1), torch.tensor([3, 4, 4, 1]), lengths,
                                            torch.tensor([3, 1]), blank=10, reduction="mean")
    torch.testing.assert_close(transcript_ctc_loss(scores, lengths, targets), expected)


def test_retrieval_matrix_diagonal_is_each_clips_own_loss_per_token():
    torch.manual_seed(1)
    scores = torch.randn(3, 9, 21)
    lengths = torch.tensor([9, 8, 6])
    targets = [torch.tensor([1, 2, 3]), torch.tensor([5, 5]), torch.tensor([7, 1, 9, 2])]
    matrix = transcript_ctc_matrix(scores, lengths, targets)
    for i in range(3):
        for j in range(3):
            own = transcript_ctc_loss(scores[i : i + 1, : int(lengths[i])], lengths[i : i + 1], [targets[j]])
            torch.testing.assert_close(matrix[i, j], own, **tolerances(reduction=21))
    # a transcript too long for a clip's positions is infinitely unlikely there, not free (training's zero_infinity)
    short = transcript_ctc_matrix(scores[:, :2], torch.tensor([2, 2, 2]), [torch.tensor([1]), torch.tensor([1, 2, 3, 4])])
    assert torch.isfinite(short[:, 0]).all() and torch.isinf(short[:, 1]).all()
    assert ap.best_path(torch.tensor([[0.0, 5, 0], [0, 5, 0], [0, 0, 5], [0, 5, 0], [5, 0, 0]]), 5) == [1, 1, 0]


def test_the_head_alone_learns_two_clips_and_a_checkpoint_resumes_exactly(tmp_path):
    torch.manual_seed(0)
    aligner = ap.Aligner(saved_model(tmp_path))
    frozen = {k: v.clone() for k, v in aligner.model.state_dict().items() if not k.startswith("audio_frontend.projector.")}
    clips = [speechlike(1.6, 3), speechlike(1.6, 4)]
    targets = [torch.tensor([5, 9, 12]), torch.tensor([20, 7])]
    states = aligner.states(clips)
    assert [s.shape for s in states] == [(40, 16)] * 2  # 1.6 s: 80 encoder frames, pooled 2 by 2
    # the tiny random encoder hears these two alike (its states differ by ~2 %): the head learns from states that differ
    states = [torch.randn(40, 16), torch.randn(40, 16)]
    optimizer = torch.optim.AdamW(aligner.head_params, lr=5e-2)

    def step():
        scores, lengths = aligner.scores(states)
        loss = transcript_ctc_loss(scores, lengths, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    first = step()
    for _ in range(150):
        last = step()
    assert last < 0.1 * first
    with torch.no_grad():
        scores, lengths = aligner.scores(states)
    assert [ap.best_path(scores[i], int(lengths[i])) for i in range(2)] == [t.tolist() for t in targets]
    after = aligner.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in frozen.items())  # encoder, LLM: untouched
    # a checkpoint resumes exactly: the next step from the restored head and optimizer equals the next step here
    out = tmp_path / "run"
    ap.save_checkpoint(out, aligner, optimizer, {"step": 151, "next_row": 5})
    resumed = ap.Aligner(tmp_path / "base")
    resumed_opt = torch.optim.AdamW(resumed.head_params, lr=5e-2)
    assert ap.load_checkpoint(out, resumed, resumed_opt) == {"step": 151, "next_row": 5}
    step()
    scores, lengths = resumed.scores(states)
    loss = transcript_ctc_loss(scores, lengths, targets)
    resumed_opt.zero_grad()
    loss.backward()
    resumed_opt.step()
    for (name, a), b in zip(aligner.frontend.projector.named_parameters(), resumed.frontend.projector.parameters()):
        torch.testing.assert_close(a, b, **tolerances(reduction=1024), msg=name)
    # shipped: the head as a variant's trained weights (projector.*), with its provenance beside it
    ap.save_checkpoint(out, aligner, optimizer, {"step": 82, "next_row": 6})
    shipped = ap.ship_weights(out, tmp_path / "weights" / "head.safetensors", {"rows": 82})
    head = load_file(str(out / "checkpoint" / "head.safetensors"))
    weights = load_file(str(shipped))
    assert weights.keys() == {f"projector.{k}" for k in head}
    assert all(torch.equal(weights[f"projector.{k}"], v) for k, v in head.items())
    provenance = json.loads(shipped.with_suffix(".json").read_text())
    assert provenance["rows"] == 82 and provenance["tensors"]["projector.token_bias"] == list(head["token_bias"].shape)


def test_the_learning_rate_is_a_function_of_rows_seen():

    args = SimpleNamespace(lr=1e-3, decay_from=1000, decay_to=3000, lr_floor=0.1)
    assert [ap.learning_rate(args, r) for r in (0, 1000)] == [1e-3, 1e-3]
    assert abs(ap.learning_rate(args, 2000) - 0.55e-3) < 1e-12
    assert ap.learning_rate(args, 3000) == ap.learning_rate(args, 9000) == pytest.approx(1e-4, rel=1e-12)
    assert ap.learning_rate(SimpleNamespace(lr=2e-3), 10**6) == 2e-3  # no schedule: constant


def test_rows_are_a_pure_function_of_seed_and_index_and_never_held_out():
    texts = [f"sentence {i}" for i in range(200)]
    voices = ["v0", "v1", "v2"]
    first = [stream.row(texts, voices, 0, i) for i in range(300)]
    assert first == [stream.row(texts, voices, 0, i) for i in range(300)]
    assert first != [stream.row(texts, voices, 1, i) for i in range(300)]
    held = set(texts[-stream.HELD_OUT :])
    assert not held & {t for t, _ in first}
    repeated = [stream.row(texts, voices, 0, i, unique_rows=40) for i in range(120)]  # the first 40 rows, three times
    assert repeated == first[:40] * 3


def test_a_run_keeps_its_unique_rows_across_resumes(tmp_path):
    args = SimpleNamespace(out=str(tmp_path), unique_rows=0)
    with pytest.raises(SystemExit, match=r"trained with --unique-rows 800, not 0"):
        ap.check_run_start(args, {"step": 5, "unique_rows": 800})
    ap.check_run_start(SimpleNamespace(out=str(tmp_path), unique_rows=0), {"step": 5})  # older checkpoints: fresh rows


def test_the_row_stream_hands_out_synthesised_rows_in_index_order_and_resumes(tmp_path):
    from audio_minichat.dataprep.voices import training_voices

    pool = tmp_path / "texts.json"
    texts = [f"Row number {i} is read aloud." for i in range(stream.HELD_OUT + 6)]
    pool.write_text(json.dumps(texts))
    voices = training_voices(3, 4)
    rows = stream.RowStream(3, 0, 4, pool)
    try:
        first = rows.take(3)
    finally:
        rows.close()
    assert [t for t, _ in first] == [stream.row(texts, voices, 3, i)[0] for i in range(3)]
    assert all(a.dtype.name == "float32" and len(a) > 8000 for _, a in first) and rows.next_row == 3
    resumed = stream.RowStream(3, 2, 4, pool)  # a run resumed at row 2 sees row 2 again, the same speech
    try:
        again = resumed.take(1)
    finally:
        resumed.close()
    assert again[0][0] == first[2][0] and np.array_equal(again[0][1], first[2][1])


def test_sampled_candidates_hold_every_target_and_the_loss_reads_their_scores(tmp_path):
    targets = [torch.tensor([5, 11, 12]), torch.tensor([20, 7, 5])]
    columns, renumbered = ap.candidates(targets, 119, 30, torch.Generator().manual_seed(0), exclude=118)
    assert 118 not in columns.tolist() and columns.tolist() == sorted(set(columns.tolist()))
    assert [columns[r].tolist() for r in renumbered] == [t.tolist() for t in targets]
    assert ap.candidates(targets, 119, 0, torch.Generator())[0] is None
    # the head's scores over the candidates are its full scores' columns (the blank still last)
    aligner = ap.Aligner(saved_model(tmp_path))
    states = [torch.randn(12, 16), torch.randn(9, 16)]
    with torch.no_grad():
        full, lengths = aligner.scores(states)
        cut, cut_lengths = aligner.scores(states, columns)
    assert torch.equal(lengths, cut_lengths)
    torch.testing.assert_close(cut, torch.cat([full[..., columns], full[..., -1:]], dim=-1), **tolerances(reduction=32))


def test_an_attention_head_seeded_by_a_conv_head_starts_as_it_and_then_hears_far_positions(tmp_path):
    """``attn_mlp`` = ``conv_mlp`` + two AttentionMix blocks whose map back up starts at zero: seeded with a trained conv
    head's weights (--init-head) it writes the conv head's scores exactly; once its blocks are non-zero a position's
    scores follow positions beyond the convolution's reach (2 either side)."""
    torch.manual_seed(0)
    model, processor = make_model("whisper", audio_frontend="posterior", frontend_config=CTC, projector_type="conv_mlp")
    model.audio_frontend.projector.net[2].out.weight.data.normal_(0, 0.5)  # a "trained" conv block, not the silent start
    conv = tmp_path / "conv"
    ap.save_checkpoint(conv, SimpleNamespace(frontend=model.audio_frontend), torch.optim.AdamW(model.audio_frontend.projector.parameters()), {"step": 1})
    attn, attn_processor = make_model("whisper", audio_frontend="posterior", frontend_config=CTC, projector_type="attn_mlp")
    attn.audio_frontend.init_weights(0.02)  # as a build initialises its fresh head (assets.default_build.assemble_model)
    attn.save_pretrained(tmp_path / "attn")
    attn_processor.save_pretrained(tmp_path / "attn")
    aligner = ap.Aligner(tmp_path / "attn")
    assert aligner.frontend.projector.per_sequence and len(aligner.frontend.projector.context) == 2
    ap.seed_head(aligner, conv)
    states = [torch.randn(12, 16)]
    with torch.no_grad():  # the same LLM table for both: only the heads differ
        torch.testing.assert_close(aligner.frontend.scores(states[0], aligner.table),
                                   model.audio_frontend.scores(states[0], aligner.table), rtol=0, atol=0)
        for block in aligner.frontend.projector.context:
            block.up.weight.normal_(0, 0.5)
        moved = states[0].clone()
        moved[11] += 3.0  # nine positions from position 0: beyond the convolution, within attention
        first = aligner.frontend.scores(states[0], aligner.table)[0]
        assert not torch.allclose(first, aligner.frontend.scores(moved, aligner.table)[0])
    # a head that does not fit is refused in one line, naming the file's weights
    (tmp_path / "other" / "checkpoint").mkdir(parents=True)
    from safetensors.torch import save_file

    save_file({"net.9.weight": torch.zeros(2)}, str(tmp_path / "other" / "checkpoint" / "head.safetensors"))
    with pytest.raises(SystemExit, match=r"--init-head .*other: its head does not fit this model's \(attn_mlp\): weights it lacks \['net.9.weight'\]"):
        ap.seed_head(aligner, tmp_path / "other")
    with pytest.raises(SystemExit, match=r"head.safetensors does not exist"):
        ap.seed_head(aligner, tmp_path / "missing")


def test_a_run_keeps_its_seed_head_and_first_row_across_resumes(tmp_path):
    base = saved_model(tmp_path)
    args = SimpleNamespace(out=str(tmp_path / "run"), model=str(base), seed=0, bf16=False, lr=1e-3, unique_rows=0,
                           init_head=None, first_row=700)
    ap.initial_state(args)
    assert args.state["next_row"] == 700 and args.state["first_row"] == 700 and args.state["init_head"] is None
    ap.save_checkpoint(tmp_path / "run", args.aligner, args.optimizer, {**args.state, "step": 3})
    ap.initial_state(args)  # resumed with the same start
    assert args.state["step"] == 3
    with pytest.raises(SystemExit, match=r"was trained with --first-row 700, not 0"):
        ap.initial_state(SimpleNamespace(**{**vars(args), "first_row": 0}))
