"""Distillation training: losses, batching, gradient accumulation, what trains, checkpoints, resume, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ASR_TOKENS_TINY, fill_token_map, make_model, speechlike
from transformers import TrainingArguments

from audio_minichat.audio_dataset import audio_dataset, encode_wav
from audio_minichat.train_trainer import (
    DataConfig,
    DistillationCollator,
    DistillationTrainer,
    LossConfig,
    RunConfig,
    TrainableConfig,
    build_trainer,
    configure_trainable,
    load_trained_model,
)

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["hello world", "the sound of water", "what time is it", "one two three", "people call him first",
         "look at the day", "write more words", "the long way down"]


def rows(n=8):
    return [
        {"audio": {"array": speechlike(0.6 + 0.15 * i, seed=i), "sampling_rate": 16000}, "transcript": TEXTS[i % 8],
         "prompt": "summarize <|audio|>" if i % 2 else "<|audio|>", "response": " ".join(TEXTS[(i + 3) % 8].split()[:2 + i % 3])}
        for i in range(n)
    ]


def make_dataset(path: Path, n=8):
    data = rows(n)
    cols = {k: [r[k] for r in data] for k in ("transcript", "prompt", "response")}
    cols["audio"] = [encode_wav(r["audio"]["array"]) for r in data]
    ds = audio_dataset(cols)
    ds.save_to_disk(str(path))
    return ds


def trainer_for(model, processor, tmp_path, loss=None, **args):
    defaults = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, learning_rate=1e-2, max_steps=1,
                    report_to=[], remove_unused_columns=False, save_strategy="no", logging_steps=1, seed=0,
                    lr_scheduler_type="constant", optim="sgd", dataloader_num_workers=0, use_cpu=True)
    defaults.update(args)
    return DistillationTrainer(
        model=model, args=TrainingArguments(**defaults), train_dataset=rows(8),
        data_collator=DistillationCollator(make_model_processor_cache[id(model)], DataConfig()),
        loss_config=loss or LossConfig(feature_layers=[-1, 1]),
    )


make_model_processor_cache: dict = {}


def tiny(seed=0, trainable=None, **config_kwargs):
    model, processor = make_model("whisper", seed=seed, **config_kwargs)
    if config_kwargs.get("downsample") == "asr_tokens":
        fill_token_map(model)
        with torch.no_grad():
            model.projector.net[-1].weight.normal_(0.0, 0.02)  # a nonzero state projection: both parts count
    configure_trainable(model, trainable or TrainableConfig())
    make_model_processor_cache[id(model)] = processor
    return model, processor


@pytest.mark.parametrize("config_kwargs", [{}, ASR_TOKENS_TINY], ids=["pool", "asr_tokens"])
def test_batched_loss_is_mean_of_per_sample_losses(tmp_path, config_kwargs):
    model, processor = tiny(**config_kwargs)
    model.train()
    collator = DistillationCollator(processor, DataConfig())
    trainer = trainer_for(model, processor, tmp_path)
    data = rows(4)
    with torch.no_grad():
        batched = trainer.compute_loss(model, collator(data))
        singles = [trainer.compute_loss(model, collator([r])) for r in data]
    torch.testing.assert_close(batched, torch.stack(singles).mean(), atol=1e-5, rtol=1e-5)
    # every term contributes, and layer 0 is rejected
    assert batched > 0
    with pytest.raises(ValueError, match="layer 0 is the token embeddings"):
        LossConfig(feature_layers=[0, -1])


def test_identical_student_and_teacher_give_zero_distillation():
    """If the audio embeddings equal the transcript's token embeddings, logit and feature losses vanish."""
    from audio_minichat.train_trainer import distillation_losses

    logits = torch.randn(2, 7, 11)
    hidden = tuple(torch.randn(2, 7, 5) for _ in range(3))
    labels = torch.full((2, 7), -100)
    labels[0, 3:6] = torch.tensor([1, 2, 3])
    labels[1, 4:7] = torch.tensor([4, 5, 6])
    terms = distillation_losses(logits, labels, logits, labels, hidden, hidden, LossConfig(feature_layers=[1, 2]))
    assert float(terms["feature"]) == 0.0
    # soft CE against itself equals the entropy, and the gradient wrt student logits is zero there
    probs = torch.softmax(logits, -1)
    entropy = -(probs * probs.log()).sum(-1)
    mask = torch.zeros(2, 7, dtype=torch.bool)
    mask[0, 2:5] = True
    mask[1, 3:6] = True
    expected = torch.stack([entropy[0][mask[0]].mean(), entropy[1][mask[1]].mean()]).mean()
    torch.testing.assert_close(terms["logit"], expected)


def test_gradient_accumulation_equals_larger_batch(tmp_path):
    results = []
    for bs, ga in ((4, 1), (2, 2)):
        model, processor = tiny()
        trainer = trainer_for(model, processor, tmp_path / f"{bs}", per_device_train_batch_size=bs,
                              gradient_accumulation_steps=ga)
        trainer.train()
        results.append(model.projector.net[0].weight.detach().clone())
    torch.testing.assert_close(results[0], results[1], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("encoder,llm", [("frozen", "frozen"), ("full", "frozen"), ("lora", "frozen"), ("frozen", "lora")])
def test_only_trainable_parts_change_and_optimizer_holds_only_them(tmp_path, encoder, llm):
    model, processor = tiny(trainable=TrainableConfig(encoder=encoder, llm=llm))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = trainer_for(model, processor, tmp_path, max_steps=2, optim="adamw_torch", learning_rate=1e-2)
    trainer.train()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    in_optimizer = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for n, p in model.named_parameters() if n in trainable}
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert changed and changed <= trainable
    assert any(n.startswith("projector.") for n in changed)
    assert any(n.startswith("audio_encoder.") for n in changed) == (encoder != "frozen")
    assert any(n.startswith("language_model.") for n in changed) == (llm == "lora")
    if llm == "lora":
        assert all("lora_" in n for n in changed if n.startswith("language_model."))


def _config(tmp_path, model_dir, data_dir, **training):
    cfg = {
        "model": str(model_dir), "output_dir": str(tmp_path / "run"),
        "losses": {"ntp": 0.5, "logit": 0.5, "feature": 1.0, "feature_layers": [-1]},
        "trainable": {"encoder": "frozen", "llm": "frozen"},
        "data": {"train": str(data_dir)},
        "training": {"per_device_train_batch_size": 2, "max_steps": 6, "save_steps": 3, "logging_steps": 1,
                     "learning_rate": 5e-3, "report_to": [], "warmup_steps": 0, "use_cpu": True, **training},
    }
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def saved(tmp_path):
    model, processor = make_model("whisper")
    model.save_pretrained(tmp_path / "base")
    processor.save_pretrained(tmp_path / "base")
    make_dataset(tmp_path / "data")
    return tmp_path / "base", tmp_path / "data"


def _losses(history):
    return [(h["step"], h["loss"]) for h in history if "loss" in h and "train_loss" not in h]


def test_resume_continues_with_same_data_order_and_loss_curve(tmp_path, saved):
    base, data = saved
    full = build_trainer(RunConfig.from_yaml(_config(tmp_path / "a", base, data)))
    full.train()
    reference = _losses(full.state.log_history)
    assert len(reference) == 6
    # a run stopped after step 3 (its checkpoint written), then resumed
    cut = build_trainer(RunConfig.from_yaml(_config(tmp_path / "b", base, data, max_steps=6)))
    cut.args.max_steps = 6

    class StopAt3(__import__("transformers").TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                control.should_training_stop = True
                control.should_save = True

    cut.add_callback(StopAt3())
    cut.train()
    ckpt = tmp_path / "b" / "run" / "checkpoint-3"
    assert {"trainable.safetensors", "optimizer.safetensors", "scheduler.json", "rng_state_0.safetensors"} <= set(os.listdir(ckpt))
    assert not any(f.endswith((".pt", ".pth", ".bin")) for f in os.listdir(ckpt))
    resumed = build_trainer(RunConfig.from_yaml(_config(tmp_path / "b", base, data)))
    resumed.train(resume_from_checkpoint=str(ckpt))
    got = _losses(resumed.state.log_history)
    assert [s for s, _ in got][-3:] == [4, 5, 6]
    for (s1, l1), (s2, l2) in zip(reference[3:], got[-3:]):
        assert s1 == s2 and l1 == pytest.approx(l2, rel=1e-4, abs=1e-6)


def test_trainable_only_checkpoint_reloads_complete_model(tmp_path, saved):
    base, data = saved
    trainer = build_trainer(RunConfig.from_yaml(_config(tmp_path, base, data, max_steps=2)))
    trainer.train()
    out = tmp_path / "final"
    trainer.save_model(str(out))
    size = os.path.getsize(out / "trainable.safetensors")
    assert size < 20_000  # projector only
    reloaded = load_trained_model(str(out))
    live = trainer.model.eval()
    proc = trainer.processing_class
    inputs = proc(text=proc.build_prompt("<|audio|>"), audio=speechlike(1.0), sampling_rate=16000)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, live(**inputs).logits)
    base_model = type(live).from_pretrained(base)
    for name, p in reloaded.named_parameters():
        if not name.startswith("projector."):
            assert torch.equal(p, dict(base_model.named_parameters())[name]), name


def test_exported_weights_with_encoder_lora_rebuild_the_trained_model(tmp_path, saved):
    """scripts/export_projector.py -> default_model.apply_trained_weights: LoRA pairs merged, same logits."""
    from audio_minichat.default_model import apply_trained_weights

    base, data = saved
    cfg = _config(tmp_path, base, data, max_steps=2, learning_rate=5e-2)
    raw = yaml.safe_load(cfg.read_text())
    raw["trainable"] = {"encoder": "lora", "llm": "frozen", "lora_r": 4, "lora_alpha": 8,
                        "encoder_lora_targets": ["q_proj", "v_proj", "fc1"]}
    cfg.write_text(yaml.safe_dump(raw))
    trainer = build_trainer(RunConfig.from_yaml(cfg))
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    shipped = tmp_path / "ship" / "w.safetensors"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "export_projector.py"), str(tmp_path / "final"),
                    "--out", str(shipped)], check=True, capture_output=True, text=True)
    live = trainer.model.eval()
    rebuilt = type(live).from_pretrained(base).eval()
    counts = apply_trained_weights(rebuilt, shipped)
    n_layers = rebuilt.config.audio_config.encoder_layers
    assert counts == {"projector": 2, "lora_merged": 3 * n_layers, "full": 0}
    proc = trainer.processing_class
    inputs = proc(text=proc.build_prompt("<|audio|>"), audio=speechlike(1.0), sampling_rate=16000)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(**inputs).logits, live(**inputs).logits, rtol=1e-4, atol=1e-4)
        # the LoRA really moved the encoder: the untouched base differs
        plain = type(live).from_pretrained(base).eval()
        apply_trained_weights(plain, _projector_only(shipped, tmp_path / "p.safetensors"))
        assert not torch.allclose(plain(**inputs).logits, live(**inputs).logits, atol=1e-4)
    # a later stage starts from the shipped file (init_weights); its checkpoint reloads with that start included
    cfg2 = _config(tmp_path / "stage2", base, data, max_steps=1)
    raw = yaml.safe_load(cfg2.read_text())
    raw["init_weights"] = str(shipped)
    cfg2.write_text(yaml.safe_dump(raw))
    stage2 = build_trainer(RunConfig.from_yaml(cfg2))
    with torch.no_grad():
        torch.testing.assert_close(stage2.model.eval()(**inputs).logits, live(**inputs).logits, rtol=1e-4, atol=1e-4)
    stage2.train()
    stage2.save_model(str(tmp_path / "final2"))
    with torch.no_grad():
        torch.testing.assert_close(load_trained_model(str(tmp_path / "final2"))(**inputs).logits,
                                   stage2.model.eval()(**inputs).logits)
    raw["init_weights"] = str(tmp_path / "missing.safetensors")
    cfg2.write_text(yaml.safe_dump(raw))
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        build_trainer(RunConfig.from_yaml(cfg2))


def _projector_only(src, dst):
    from safetensors.torch import load_file, save_file

    save_file({k: v for k, v in load_file(str(src)).items() if k.startswith("projector.")}, str(dst))
    return dst


def test_apply_trained_weights_names_the_bad_tensor(tmp_path):
    from safetensors.torch import save_file

    from audio_minichat.default_model import apply_trained_weights

    model, _ = make_model("whisper")
    save_file({"encoder.oops": torch.zeros(2)}, str(tmp_path / "a.safetensors"))
    with pytest.raises(ValueError, match="no projector tensors"):
        apply_trained_weights(model, tmp_path / "a.safetensors")
    proj = {f"projector.{k}": v for k, v in model.projector.state_dict().items()}
    save_file({**proj, "audio_encoder.nope.weight": torch.zeros(2)}, str(tmp_path / "b.safetensors"))
    with pytest.raises(ValueError, match="'audio_encoder.nope.weight' matches no parameter"):
        apply_trained_weights(model, tmp_path / "b.safetensors")
    save_file({**proj, "audio_encoder.layers.0.fc1.lora_A.default.weight": torch.zeros(2, 2)}, str(tmp_path / "c.safetensors"))
    with pytest.raises(ValueError, match="no matching lora_B"):
        apply_trained_weights(model, tmp_path / "c.safetensors")
    mlp, _ = make_model("whisper", projector_type="mlp", projector_hidden_size=16)
    save_file(proj, str(tmp_path / "d.safetensors"))  # a linear projector's file into an MLP projector
    with pytest.raises(ValueError, match=r"d.safetensors: its projector tensors .* do not fit this model's projector \(mlp, hidden 16\)"):
        apply_trained_weights(mlp, tmp_path / "d.safetensors")


def test_main_refuses_to_mix_a_new_run_into_old_checkpoints(tmp_path, saved):
    from audio_minichat.train_trainer import main

    base, data = saved
    cfg = _config(tmp_path, base, data, max_steps=2, save_steps=2)
    assert main(["--config", str(cfg)]) == 0
    assert (tmp_path / "run" / "checkpoint-2").is_dir() and (tmp_path / "run" / "final" / "trainable.safetensors").is_file()
    with pytest.raises(SystemExit, match=r"already holds checkpoints \(checkpoint-2\): pass --resume"):
        main(["--config", str(cfg)])
    assert main(["--config", str(cfg), "--resume", "--max-steps", "3"]) == 0  # continues: one more step
    history = json.loads((tmp_path / "run" / "final" / "log_history.json").read_text())
    assert [h["step"] for h in history if "loss" in h and "train_loss" not in h][-1] == 3


@pytest.mark.integration
def test_accelerate_launch_two_cpu_processes(tmp_path, saved):
    base, data = saved
    cfg = _config(tmp_path, base, data, max_steps=2, save_steps=2)
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", ACCELERATE_DISABLE_RICH="1")
    import socket

    with socket.socket() as sock:  # a free port for the rendezvous, so parallel runs don't collide
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    run = subprocess.run(
        # On a machine without GPUs, `--multi_gpu` makes accelerate start torchrun; DDP then runs on CPU with gloo.
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--main_process_port", port, "--mixed_precision", "no", "--dynamo_backend", "no", str(ROOT / "train_trainer.py"), "--config", str(cfg)],
        capture_output=True, text=True, env=env, timeout=600, cwd=str(tmp_path),
    )
    # the launcher's own summary hides the failing rank's message: show what the ranks printed, progress bars aside
    ranks = [line for line in run.stderr.splitlines() if "it/s]" not in line and "s/it]" not in line]
    assert run.returncode == 0, "\n".join(ranks[-80:])
    history = json.loads((tmp_path / "run" / "final" / "log_history.json").read_text())
    assert _losses(history) and all(l > 0 for _, l in _losses(history))
    assert "world size 2" in run.stderr
    assert (tmp_path / "run" / "checkpoint-2" / "trainable.safetensors").exists()


# ---- ctc alignment term ------------------------------------------------------------------------------------
def test_ctc_alignment_loss_matches_full_distance_logits_and_batches_as_mean():
    """Dropping |h|^2 from the distance logits changes nothing; a batch is the mean of its clips."""
    import torch.nn.functional as F

    from audio_minichat.train_trainer import ctc_alignment_loss

    gen = torch.Generator().manual_seed(0)
    table = torch.randn(12, 6, generator=gen)
    clips = [torch.randn(9, 6, generator=gen), torch.randn(7, 6, generator=gen)]
    targets = torch.tensor([[3, 4, 4, 5], [7, 8, -100, -100]])
    scale = 2.5

    def reference(h, tgt):
        logits = -scale * torch.cdist(h, table).pow(2) / 2  # full squared distance, blank = token 0
        lp = logits.log_softmax(-1).unsqueeze(1)
        return F.ctc_loss(lp, tgt.unsqueeze(0), torch.tensor([h.shape[0]]), torch.tensor([len(tgt)]), blank=0)

    batched = ctc_alignment_loss(clips, targets, table, blank_id=0, scale=scale)
    per_clip = [reference(clips[0], targets[0]), reference(clips[1], targets[1, :2])]
    # F.ctc_loss(reduction="mean") already divides by the target length: the term is the mean of those
    torch.testing.assert_close(batched, torch.stack(per_clip).mean(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ctc_alignment_loss(clips[:1], targets[:1, :4], table, 0, scale), per_clip[0], atol=1e-4, rtol=1e-4)


def test_ctc_alignment_loss_is_small_when_audio_embeddings_are_the_tokens():
    from audio_minichat.train_trainer import ctc_alignment_loss

    gen = torch.Generator().manual_seed(1)
    table = torch.randn(20, 8, generator=gen) * 3
    tokens = [5, 9, 9, 2]
    frames = []  # blank, token, blank, ... (CTC needs a blank between the repeated 9s)
    for t in tokens:
        frames += [table[0], table[t]]
    frames = torch.stack(frames + [table[0]])
    aligned = ctc_alignment_loss([frames], torch.tensor([tokens]), table, 0, scale=10.0)
    shuffled = ctc_alignment_loss([frames.flip(0)], torch.tensor([tokens]), table, 0, scale=10.0)
    assert float(aligned) < 1e-3 < float(shuffled)
    with pytest.raises(ValueError, match="blank token id 0"):
        ctc_alignment_loss([frames], torch.tensor([[5, 0]]), table, 0, scale=10.0)
    with pytest.raises(ValueError, match=r"Clip\(s\) \[1\] have an empty transcript"):
        ctc_alignment_loss([frames, frames], torch.tensor([[5], [-100]]), table, 0, scale=10.0)
    with pytest.raises(ValueError, match="2 audio clips but 1 CTC target rows"):
        ctc_alignment_loss([frames, frames], torch.tensor([[5]]), table, 0, scale=10.0)


def test_ctc_only_skips_the_llm_and_trains_the_projector_only(tmp_path):
    from audio_minichat.train_trainer import distillation_step

    model, processor = tiny()
    model.train()
    collator = DistillationCollator(processor, DataConfig(), ctc_blank_token=";")
    batch = collator(rows(3))
    assert int(batch["ctc_blank"]) == processor.tokenizer.convert_tokens_to_ids(";")
    plain = DistillationCollator(processor, DataConfig())(rows(1))
    assert not {"ctc_labels", "ctc_blank"} & set(plain)  # without the ctc terms no transcript tokens are made
    with pytest.raises(ValueError, match="needs ctc_labels and ctc_blank"):
        distillation_step(model, model, plain, LossConfig(ctc=1.0))
    # the transcript tokens, as the tokenizer reads them, one row per clip
    first = processor.tokenizer(TEXTS[0], add_special_tokens=False)["input_ids"]
    assert batch["ctc_labels"][0, : len(first)].tolist() == first
    assert (batch["ctc_labels"][0, len(first):] == -100).all()
    # a transcript token equal to the blank is dropped from the targets
    blank_in = DistillationCollator(processor, DataConfig(), ctc_blank_token="world")([{**rows(1)[0], "transcript": "hello world"}])
    assert blank_in["ctc_labels"].tolist() == [processor.tokenizer("hello", add_special_tokens=False)["input_ids"]]
    calls = []
    hook = model.language_model.register_forward_hook(lambda *a: calls.append(1))
    try:
        cfg = LossConfig(ntp=0, logit=0, feature=0, ctc=1.0, ctc_embed=0.5)
        loss, terms, _ = distillation_step(model, model, batch, cfg)
        assert set(terms) == {"ctc", "ctc_embed"} and torch.isfinite(loss) and calls == []
        torch.testing.assert_close(loss, terms["ctc"] + 0.5 * terms["ctc_embed"])
        loss.backward()
        grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        assert grads and all(n.startswith("projector.") for n in grads)
        model.zero_grad()
        # with the paper's terms too, the LLM runs once (the student; the teacher pass is the same module, no grad)
        cfg = LossConfig(ctc=0.3, feature_layers=[-1])
        loss, terms, _ = distillation_step(model, model, batch, cfg)
        assert set(terms) == {"ntp", "logit", "feature", "ctc"}  # ctc_embed has weight 0: not computed
        expected = 0.5 * terms["ntp"] + 0.5 * terms["logit"] + 1.0 * terms["feature"] + 0.3 * terms["ctc"]
        torch.testing.assert_close(loss, expected)
    finally:
        hook.remove()
    with pytest.raises(ValueError, match="All loss weights are 0"):
        LossConfig(ntp=0, logit=0, feature=0)
    with pytest.raises(ValueError, match="must be exactly one"):
        DistillationCollator(processor, DataConfig(), ctc_blank_token="hello world")


def test_ctc_data_vocabulary_scores_only_the_candidate_tokens():
    """ctc_vocab: data restricts the scoring to the transcripts' tokens + blank: the same as a table of those rows."""
    from audio_minichat.train_trainer import _ctc_term, ctc_alignment_loss

    model, processor = tiny()
    data = rows(3)
    plain = DistillationCollator(processor, DataConfig(), ctc_blank_token=";")
    vocab = {i for ids in plain.transcript_ids([r["transcript"] for r in data]) for i in ids}
    collator = DistillationCollator(processor, DataConfig(), ctc_blank_token=";", ctc_candidates=vocab)
    batch = collator(data)
    cand = batch["ctc_candidates"]
    assert cand.tolist() == sorted(vocab | {int(batch["ctc_blank"])})
    clips = [torch.randn(12, model.config.text_config.hidden_size) for _ in range(3)]
    got = _ctc_term(model, clips, batch, LossConfig(ctc=1.0, ctc_vocab="data"))["ctc"]
    table = model.get_input_embeddings().weight.detach()[cand]
    remap = {int(t): i for i, t in enumerate(cand)}
    labels = batch["ctc_labels"].clone()
    labels[labels != -100] = torch.tensor([remap[int(t)] for t in labels[labels != -100]])
    want = ctc_alignment_loss(clips, labels, table, remap[int(batch["ctc_blank"])], 10.0)
    torch.testing.assert_close(got, want)
    # the full vocabulary gives a larger loss (more competitors), and a token outside the candidates is an error
    full = _ctc_term(model, clips, {k: v for k, v in batch.items() if k != "ctc_candidates"}, LossConfig(ctc=1.0))["ctc"]
    assert float(full) > float(got)
    other = DistillationCollator(processor, DataConfig(), ctc_blank_token=";", ctc_candidates=list(vocab)[:1])(data)
    with pytest.raises(ValueError, match="are not among the ctc candidate tokens"):
        _ctc_term(model, clips, other, LossConfig(ctc=1.0, ctc_vocab="data"))


def test_nearest_tokens_reads_embeddings_back_and_token_error_rate():
    from audio_minichat.train_trainer import nearest_tokens, token_error_rate

    gen = torch.Generator().manual_seed(2)
    table = torch.randn(30, 8, generator=gen) * 3
    frames = torch.stack([table[0], table[4], table[4], table[0], table[7], table[0], table[7], table[9]])
    frames = frames + 0.01 * torch.randn(frames.shape, generator=gen)
    assert nearest_tokens(frames, table, blank_id=0) == [4, 7, 7, 9]  # repeats collapse unless a blank parts them
    assert token_error_rate([[1, 2, 3, 4]], [[1, 3, 4]]) == 0.25  # one deletion
    assert token_error_rate([[1, 2], [5]], [[1, 2, 6], [7]]) == 2 / 3  # one insertion + one substitution
    assert token_error_rate([[1, 2]], [[1, 2]]) == 0.0


def test_ctc_embed_pulls_each_frame_to_its_aligned_token_embedding():
    """With as many frames as tokens the alignment is forced: frame t's target is token t's embedding."""
    from audio_minichat.train_trainer import ctc_alignment_loss

    gen = torch.Generator().manual_seed(3)
    table = torch.randn(15, 6, generator=gen)
    tokens = [3, 8, 5]
    frames = torch.randn(3, 6, generator=gen, requires_grad=True)
    _, embed = ctc_alignment_loss([frames], torch.tensor([tokens]), table, 0, scale=4.0, with_embed=True)
    expected = ((frames - table[tokens]) ** 2).sum(-1).div(2).mean()
    torch.testing.assert_close(embed, expected)
    embed.backward()  # the target is held fixed: the gradient is (frame - target) / frames
    torch.testing.assert_close(frames.grad, (frames - table[tokens]).detach() / 3)
    # frames on their tokens (blanks between) give no pull; a clip too short for its transcript gives none either
    on = torch.stack([table[0], table[3], table[0], table[8], table[0], table[5], table[0]])
    _, embed_on = ctc_alignment_loss([on], torch.tensor([tokens]), table, 0, scale=10.0, with_embed=True)
    assert float(embed_on) < 1e-3
    short = torch.randn(2, 6, generator=gen)
    ctc, embed_short = ctc_alignment_loss([short], torch.tensor([tokens]), table, 0, scale=10.0, with_embed=True)
    assert float(ctc) == 0.0 and float(embed_short) == 0.0
