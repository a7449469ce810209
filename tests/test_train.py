"""Distillation training: losses, batching, gradient accumulation, what trains, checkpoints, resume, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch
import yaml
from conftest import ASR_TOKENS_TINY, fill_token_map, make_model, speechlike, tolerances
from transformers import TrainingArguments

from audio_minichat import AudioMiniChatProcessor
from audio_minichat.dataprep.audio_dataset import audio_dataset, encode_wav
from audio_minichat.training import (
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
    if config_kwargs.get("audio_frontend") == "asr_tokens":
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
    # per-sample means over response tokens and the vocabulary: the reductions are that long
    torch.testing.assert_close(batched, torch.stack(singles).mean(), **tolerances(reduction=model.config.text_config.vocab_size))
    # every term contributes, and layer 0 is rejected
    assert batched > 0
    with pytest.raises(ValueError, match="layer 0 is the token embeddings"):
        LossConfig(feature_layers=[0, -1])


def test_identical_student_and_teacher_give_zero_distillation():
    """If the audio embeddings equal the transcript's token embeddings, logit and feature losses vanish."""
    from audio_minichat.training import distillation_losses

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
    torch.testing.assert_close(results[0], results[1], **tolerances(reduction=model.config.text_config.vocab_size))


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
    assert any(n.startswith("audio_frontend.projector.") for n in changed)
    assert any(n.startswith("audio_frontend.encoder.") for n in changed) == (encoder != "frozen")
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
    assert {"model.safetensors", "optimizer.safetensors", "scheduler.json", "rng_state_0.safetensors"} <= set(os.listdir(ckpt))
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
    size = os.path.getsize(out / "model.safetensors")
    assert size < 20_000  # projector only
    reloaded = load_trained_model(str(out))
    live = trainer.model.eval()
    proc = trainer.processing_class
    inputs = proc(text=proc.build_prompt("<|audio|>"), audio=speechlike(1.0), sampling_rate=16000)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, live(**inputs).logits)
    base_model = type(live).from_pretrained(base)
    for name, p in reloaded.named_parameters():
        if not name.startswith("audio_frontend.projector."):
            assert torch.equal(p, dict(base_model.named_parameters())[name]), name


def test_final_model_loads_and_its_trained_weights_with_encoder_lora_rebuild_it(tmp_path, saved, capsys):
    """final/ is a complete from_pretrained checkpoint (LoRA merged, peft adapter beside it); its
    trained_weights.safetensors rebuilds the same model from the base (apply_trained_weights merges the LoRA pairs)."""
    from peft import PeftModel

    from audio_minichat.assets.default_build import apply_trained_weights, read_build_info
    from audio_minichat.training import main

    base, data = saved
    cfg = _config(tmp_path, base, data, max_steps=2, learning_rate=5e-2)
    raw = yaml.safe_load(cfg.read_text())
    raw["trainable"] = {"encoder": "lora", "llm": "frozen", "lora_r": 4, "lora_alpha": 8,
                        "encoder_lora_targets": ["q_proj", "v_proj", "fc1"]}
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["--config", str(cfg)]) == 0
    final = tmp_path / "run" / "final"
    live = load_trained_model(str(tmp_path / "run" / "checkpoint-2")).eval()
    complete = type(live).from_pretrained(final).eval()
    assert not any("lora_" in n for n, _ in complete.named_parameters())
    info = read_build_info(final)
    assert info["projector_trained"] is True and info["training"]["steps"] == 2 and info["training"]["lora_merged"] == 6
    assert "# AudioMiniChat checkpoint" in (final / "README.md").read_text()
    proc = AudioMiniChatProcessor.from_pretrained(final)
    inputs = proc(text=proc.build_prompt("<|audio|>"), audio=speechlike(1.0), sampling_rate=16000)
    rebuilt = type(live).from_pretrained(base).eval()
    counts = apply_trained_weights(rebuilt, final / "trained_weights.safetensors")
    n_layers = rebuilt.config.audio_config.encoder_layers
    assert counts == {"projector": 2, "lora_merged": 3 * n_layers, "full": 0}
    with torch.no_grad():
        reference = live(**inputs).logits
        # merged float32 weights vs LoRA applied on the fly: float32 rounding of a few matrix products
        torch.testing.assert_close(complete(**inputs).logits, reference, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(rebuilt(**inputs).logits, reference, rtol=1e-4, atol=1e-4)
        # the LoRA really moved the encoder: the untouched base differs
        plain = type(live).from_pretrained(base).eval()
        apply_trained_weights(plain, _projector_only(final / "trained_weights.safetensors", tmp_path / "p.safetensors"))
        assert not torch.allclose(plain(**inputs).logits, reference, atol=1e-4)
        # peft reads the adapter: the same LoRA tensors on a fresh base
        peft_model = PeftModel.from_pretrained(type(live).from_pretrained(base), str(final / "lora_adapter"))
        adapter = {n.split("base_model.model.")[-1].replace(".default.", "."): p for n, p in peft_model.named_parameters() if "lora_" in n}
        ours = {n.replace(".default.", "."): p for n, p in live.named_parameters() if "lora_" in n}
        assert sorted(adapter) == sorted(ours) and all(torch.equal(adapter[n], ours[n]) for n in ours)
    # the command line serves final/ and refuses a trainable-only checkpoint with one line
    from audio_minichat.app.cli import main as cli

    wav = tmp_path / "a.wav"
    sf.write(wav, speechlike(1.0), 16000)
    capsys.readouterr()
    assert cli(["ask", str(wav), "--prompt", "summarize", "--mode", "e2e", "--model", str(final), "--max-new-tokens", "3",
                "--json", "--quiet"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["mode"] == "e2e" and answer["model"] == str(final) and answer["warning"] is None  # trained: no warning
    assert cli(["ask", str(wav), "--prompt", "summarize", "--model", str(tmp_path / "run" / "checkpoint-2"), "--quiet"]) == 2
    assert "is a training checkpoint (trainable tensors only, for --resume); use the run's final/ folder" in capsys.readouterr().err
    assert cli(["ask", str(wav), "--prompt", "summarize", "--model", str(tmp_path / "data"), "--quiet"]) == 2
    assert "is not an AudioMiniChat checkpoint" in capsys.readouterr().err
    # a later stage starts from the shipped file (init_weights); its checkpoint reloads with that start included
    cfg2 = _config(tmp_path / "stage2", base, data, max_steps=1)
    raw = yaml.safe_load(cfg2.read_text())
    raw["init_weights"] = str(final / "trained_weights.safetensors")
    cfg2.write_text(yaml.safe_dump(raw))
    stage2 = build_trainer(RunConfig.from_yaml(cfg2))
    with torch.no_grad():
        torch.testing.assert_close(stage2.model.eval()(**inputs).logits, reference, rtol=1e-4, atol=1e-4)
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

    from audio_minichat.assets.default_build import apply_trained_weights

    model, _ = make_model("whisper")
    save_file({"encoder.oops": torch.zeros(2)}, str(tmp_path / "a.safetensors"))
    with pytest.raises(ValueError, match="no projector tensors"):
        apply_trained_weights(model, tmp_path / "a.safetensors")
    proj = {f"projector.{k}": v for k, v in model.projector.state_dict().items()}
    save_file({**proj, "audio_frontend.encoder.nope.weight": torch.zeros(2)}, str(tmp_path / "b.safetensors"))
    with pytest.raises(ValueError, match="'audio_frontend.encoder.nope.weight' matches no parameter"):
        apply_trained_weights(model, tmp_path / "b.safetensors")
    save_file({**proj, "audio_encoder.layers.0.fc1.lora_A.default.weight": torch.zeros(2, 2)}, str(tmp_path / "c.safetensors"))
    with pytest.raises(ValueError, match="no matching lora_B"):
        apply_trained_weights(model, tmp_path / "c.safetensors")
    mlp, _ = make_model("whisper", projector_type="mlp", projector_hidden_size=16)
    save_file(proj, str(tmp_path / "d.safetensors"))  # a linear projector's file into an MLP projector
    with pytest.raises(ValueError, match=r"d.safetensors: its projector tensors .* do not fit this model's projector \(mlp, hidden 16\)"):
        apply_trained_weights(mlp, tmp_path / "d.safetensors")


def test_main_refuses_to_mix_a_new_run_into_old_checkpoints(tmp_path, saved):
    from audio_minichat.training import main

    base, data = saved
    cfg = _config(tmp_path, base, data, max_steps=2, save_steps=2)
    assert main(["--config", str(cfg)]) == 0
    assert (tmp_path / "run" / "checkpoint-2").is_dir() and (tmp_path / "run" / "final" / "model.safetensors").is_file()
    with pytest.raises(SystemExit, match=r"already holds checkpoints \(checkpoint-2\): pass --resume"):
        main(["--config", str(cfg)])
    assert main(["--config", str(cfg), "--resume", "--max-steps", "3"]) == 0  # continues: one more step
    history = json.loads((tmp_path / "run" / "final" / "log_history.json").read_text())
    assert [h["step"] for h in history if "loss" in h and "train_loss" not in h][-1] == 3


def test_checkpoints_are_readable_and_an_incomplete_resume_path_is_one_line(tmp_path, saved, capsys):
    """checkpoint-N/ gets the umask's modes (transformers writes model.safetensors 0600); --resume PATH to a
    checkpoint that a kill or a cut copy left incomplete is one line naming what is missing, exit 2, before any
    model is built."""
    import shutil

    from audio_minichat.training import main

    base, data = saved
    cfg = _config(tmp_path, base, data, max_steps=1, save_steps=1)
    previous = os.umask(0o022)
    try:
        assert main(["--config", str(cfg)]) == 0
    finally:
        os.umask(previous)
    capsys.readouterr()  # (the run's own progress)
    ckpt = tmp_path / "run" / "checkpoint-1"
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in [ckpt, *ckpt.rglob("*")]}
    assert modes["model.safetensors"] == "0o644" and {m for n, m in modes.items() if n != "checkpoint-1"} == {"0o644"}
    assert modes["checkpoint-1"] == "0o755"

    def resume(path):
        code = main(["--config", str(cfg), "--output-dir", str(tmp_path / "again"), "--resume", str(path)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
        return err

    killed = tmp_path / "killed"
    shutil.copytree(ckpt, killed)
    (killed / "trainer_state.json").unlink()
    (killed / "optimizer.safetensors").unlink()
    assert resume(killed) == (f"error: --resume {str(killed)!r} is not a complete checkpoint: trainer_state.json, "
                              "optimizer.safetensors missing (a run killed while saving it? --resume without PATH takes "
                              "the last complete one)")
    cut = tmp_path / "cut"
    shutil.copytree(ckpt, cut)
    weights = (cut / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    assert resume(cut) == (f"error: --resume {str(cut)!r} is not a complete checkpoint: model.safetensors is cut short: "
                           f"{len(weights) // 2} bytes, its tensors need {len(weights)}")
    assert resume(tmp_path / "nope") == f"error: --resume {str(tmp_path / 'nope')!r} does not exist"
    assert not (tmp_path / "again").exists()


@pytest.mark.integration
def test_accelerate_launch_two_cpu_processes(tmp_path, saved):
    base, data = saved
    cfg = _config(tmp_path, base, data, max_steps=2, save_steps=2)
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", ACCELERATE_DISABLE_RICH="1")
    import socket

    with socket.socket() as sock:  # a free port for the rendezvous, so parallel runs don't collide
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    def launch(*extra):
        # On a machine without GPUs, `--multi_gpu` makes accelerate start torchrun; DDP then runs on CPU with gloo.
        return subprocess.run(
            [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
             "--main_process_port", port, "--mixed_precision", "no", "--dynamo_backend", "no", str(ROOT / "train_trainer.py"),
             "--config", str(cfg), *extra],
            capture_output=True, text=True, env=env, timeout=600, cwd=str(tmp_path),
        )

    def check(run):
        # the launcher's own summary hides the failing rank's message: show what the ranks printed, progress bars aside
        ranks = [line for line in run.stderr.splitlines() if "it/s]" not in line and "s/it]" not in line]
        assert run.returncode == 0, "\n".join(ranks[-80:])

    run = launch()
    check(run)
    history = json.loads((tmp_path / "run" / "final" / "log_history.json").read_text())
    assert _losses(history) and all(l > 0 for _, l in _losses(history))
    assert "world size 2" in run.stderr
    # both ranks' RNG state is in the checkpoint, and the run resumes under DDP from it: one more step
    assert {"rng_state_0.safetensors", "rng_state_1.safetensors", "optimizer.safetensors"} <= set(os.listdir(tmp_path / "run" / "checkpoint-2"))
    check(launch("--resume", "--max-steps", "3"))
    history = json.loads((tmp_path / "run" / "final" / "log_history.json").read_text())
    assert [s for s, _ in _losses(history)][-1] == 3
    assert (tmp_path / "run" / "checkpoint-2" / "model.safetensors").exists()


def test_cpu_budget_ends_the_run_with_a_checkpoint_and_a_resume_counts_the_earlier_cpu(tmp_path, saved):
    """cpu_budget_minutes: the run stops at the first step past the budget, with a checkpoint there; every log line
    carries the CPU seconds so far (cpu_s), and a resumed run counts the earlier sitting's."""
    base, data = saved
    path = _config(tmp_path, base, data, max_steps=50, save_steps=100)
    raw = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**raw, "cpu_budget_minutes": 1e-6}))
    first = build_trainer(RunConfig.from_yaml(path))
    first.train()
    assert first.state.global_step == 1
    assert os.path.isfile(tmp_path / "run" / "checkpoint-1" / "optimizer.safetensors")
    spent = [h["cpu_s"] for h in first.state.log_history if "cpu_s" in h]
    assert spent and spent[-1] > 0
    resumed = build_trainer(RunConfig.from_yaml(path))  # the budget is spent already: one more step, then stop
    resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-1"))
    assert resumed.state.global_step == 2
    later = [h["cpu_s"] for h in resumed.state.log_history if "cpu_s" in h]
    assert later[-1] > spent[-1]
    path.write_text(yaml.safe_dump({**raw, "cpu_budget_minutes": 0}))
    with pytest.raises(ValueError, match="cpu_budget_minutes must be > 0, got 0.0"):
        build_trainer(RunConfig.from_yaml(path))
