"""Training from cached frozen work: stage-1 features and teacher targets computed once per row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import make_model, tolerances
from test_train import make_dataset

from audio_minichat.training import DataConfig, DistillationCollator, LossConfig, TrainableConfig, build_trainer, configure_trainable
from audio_minichat.training.cli import load_rows
from audio_minichat.training.feature_cache import CachedCollator, prepare_cached_split
from audio_minichat.training.losses import cached_distillation_step, distillation_step

LOSS = LossConfig(feature_layers=[-1, 1], temperature=2.0)


def _setup(tmp_path, trainable=None, **config_kwargs):
    model, processor = make_model("whisper", **config_kwargs)
    configure_trainable(model, trainable or TrainableConfig())
    make_dataset(tmp_path / "data")
    rows = load_rows(str(tmp_path / "data"), "train", None)
    return model, processor, rows


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


@pytest.mark.parametrize("config_kwargs,trainable", [
    ({}, None),
    ({"audio_frontend": "qformer", "frontend_config": {"qformer_queries": 30}}, TrainableConfig(llm="audio_lora", lora_r=2, lora_alpha=4)),
], ids=["pool", "qformer+audio_lora"])
def test_cached_step_equals_uncached_step_loss_and_gradients(tmp_path, config_kwargs, trainable):
    model, processor, rows = _setup(tmp_path, trainable, **config_kwargs)
    vocab = model.config.text_config.vocab_size
    cached = prepare_cached_split(model, processor, rows, str(tmp_path / "data"), "train", DataConfig(), LOSS,
                                  str(tmp_path / "cache"), topk=vocab, shard_size=3)
    batch_rows = [rows[i] for i in range(4)]
    if model.audio_lora is not None:
        with torch.no_grad():
            for pair in model.audio_lora.pairs.values():
                pair.up.weight.normal_(0, 0.3)  # a trained adapter: the student differs from the teacher
    model.train()
    loss, terms, _ = distillation_step(model, model, DistillationCollator(processor, DataConfig())(batch_rows), LOSS)
    loss.backward()
    expected = _grads(model)
    model.zero_grad(set_to_none=True)
    c_loss, c_terms, _ = cached_distillation_step(model, model, CachedCollator(processor, DataConfig(), LOSS.feature_layers)(
        [cached[i] for i in range(4)]), LOSS)
    c_loss.backward()
    got = _grads(model)
    tol = tolerances(reduction=vocab * 8)
    assert set(terms) == set(c_terms) == {"ntp", "logit", "feature"}
    for name in terms:
        torch.testing.assert_close(c_terms[name], terms[name], **tol)
    assert set(got) == set(expected) and got
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], **tol)


def test_cache_is_resumed_shard_by_shard_and_keyed_by_what_it_depends_on(tmp_path):
    model, processor, rows = _setup(tmp_path)
    root = tmp_path / "cache"
    first = prepare_cached_split(model, processor, rows, str(tmp_path / "data"), "train", DataConfig(), LOSS, str(root), 5, 3)
    folders = sorted(p.name for p in root.iterdir())
    assert [f.split("-")[0] for f in folders] == ["features", "teacher"]
    teacher = root / next(f for f in folders if f.startswith("teacher"))
    meta = json.loads((teacher / "meta.json").read_text())
    assert meta["rows"] == 8 and meta["topk"] == 5 and 0 < meta["tail_mass"] < 1
    # killed after shard 1: meta.json and the last shard gone; the rebuild writes only those, the same bytes
    shard = teacher / "shard-00002.safetensors"
    before = {p.name: p.read_bytes() for p in teacher.glob("shard-*")}
    kept = (teacher / "shard-00000.safetensors").stat().st_mtime_ns
    shard.unlink()
    (teacher / "meta.json").unlink()
    again = prepare_cached_split(model, processor, rows, str(tmp_path / "data"), "train", DataConfig(), LOSS, str(root), 5, 3)
    assert (teacher / "shard-00000.safetensors").stat().st_mtime_ns == kept
    assert {p.name: p.read_bytes() for p in teacher.glob("shard-*")} == before
    assert torch.equal(again[7]["probs"], first[7]["probs"]) and again[7]["num_samples"] == first[7]["num_samples"]
    # another top-k or temperature is another teacher cache; the features are shared
    prepare_cached_split(model, processor, rows, str(tmp_path / "data"), "train", DataConfig(), LossConfig(temperature=3.0),
                         str(root), 5, 3)
    assert sum(p.name.startswith("teacher") for p in root.iterdir()) == 2
    assert sum(p.name.startswith("features") for p in root.iterdir()) == 1


def test_cache_refuses_a_trainable_encoder(tmp_path):
    model, processor, rows = _setup(tmp_path, TrainableConfig(encoder="lora", lora_r=2))
    with pytest.raises(ValueError, match="stage 1 frozen"):
        prepare_cached_split(model, processor, rows, str(tmp_path / "data"), "train", DataConfig(), LOSS, str(tmp_path / "c"), 5)


def test_train_from_cache_with_the_trainer(tmp_path):
    model, processor = make_model("whisper", audio_frontend="qformer", frontend_config={"qformer_queries": 30})
    model.save_pretrained(tmp_path / "base")
    processor.save_pretrained(tmp_path / "base")
    make_dataset(tmp_path / "data")
    cfg = {
        "model": str(tmp_path / "base"), "output_dir": str(tmp_path / "run"),
        "losses": {"feature_layers": [-1]}, "trainable": {"llm": "audio_lora", "adapter": "lora", "lora_r": 2, "lora_alpha": 4},
        "data": {"train": str(tmp_path / "data"), "cache_dir": str(tmp_path / "cache"), "exclude_prompts": "summarize"},
        "training": {"per_device_train_batch_size": 2, "max_steps": 3, "save_steps": 3, "logging_steps": 1,
                     "learning_rate": 5e-3, "report_to": [], "warmup_steps": 0, "use_cpu": True},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    from audio_minichat.training import RunConfig

    trainer = build_trainer(RunConfig.from_yaml(str(path)))
    assert len(trainer.train_dataset) == 4  # the 4 rows whose prompt says "summarize" are left out
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert any(n.startswith("audio_lora.") for n in before) and "audio_frontend.queries" in before
    qformer = [n for n in before if n.startswith("audio_frontend.qformer.")]
    assert qformer and all(".lora_" in n for n in qformer)  # adapter: lora: the decoder copy through LoRA alone
    trainer.train()
    after = dict(trainer.model.named_parameters())
    assert all(not torch.equal(before[n], after[n]) for n in before if n.startswith("audio_frontend.projector"))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h and "train_loss" not in h]
    assert len(losses) == 3 and all(v > 0 for v in losses)
    assert (tmp_path / "run" / "checkpoint-3" / "optimizer.safetensors").is_file()
    # the complete model: LoRA merged into the decoder copy, the audio adapter kept apart (text prompts untouched)
    from audio_minichat.training import save_final_model

    final = save_final_model(trainer.base_model, trainer.processing_class, trainer.run_config, str(tmp_path / "final"),
                             trainer.state.log_history)
    from audio_minichat import AudioMiniChatForConditionalGeneration

    loaded = AudioMiniChatForConditionalGeneration.from_pretrained(final).eval()
    assert loaded.audio_lora is not None and not any(".lora_A." in n for n, _ in loaded.named_parameters())
    base = AudioMiniChatForConditionalGeneration.from_pretrained(tmp_path / "base").eval()
    text = processor(text=[processor.build_prompt("tell me something")])
    with torch.no_grad():
        assert torch.equal(loaded(**text).logits, base(**text).logits)
