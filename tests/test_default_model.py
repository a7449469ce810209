"""The offline default build: shipped trained weights applied exactly; the untrained build beside it."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from audio_minichat.default_model import SHIPPED_PROJECTOR, build_default, read_build_info
from audio_minichat.modeling_audio_minichat import AudioMiniChatForConditionalGeneration


@pytest.mark.integration
def test_default_build_holds_the_shipped_weights_and_untrained_build_does_not():
    trained_dir, untrained_dir = build_default(), build_default(untrained=True)
    assert trained_dir != untrained_dir
    info, info_u = read_build_info(trained_dir), read_build_info(untrained_dir)
    assert info["projector_trained"] is True and info["projector_sha1"]
    assert info_u["projector_trained"] is False and info_u["projector_weights"] is None
    trained = dict(AudioMiniChatForConditionalGeneration.from_pretrained(trained_dir).named_parameters())
    untrained = dict(AudioMiniChatForConditionalGeneration.from_pretrained(untrained_dir).named_parameters())
    with safe_open(str(SHIPPED_PROJECTOR), framework="pt") as fh:
        shipped = {k: fh.get_tensor(k) for k in fh.keys()}
        scaling = float((fh.metadata() or {}).get("lora_scaling", "nan"))
    for name, value in shipped.items():
        if name.startswith("projector."):
            assert torch.equal(trained[name], value.to(trained[name].dtype)), name
    lora_a = [k for k in shipped if ".lora_A." in k]
    changed = set()
    for key in lora_a:
        module = key.split(".lora_A.")[0]
        delta = shipped[key.replace(".lora_A.", ".lora_B.")].float() @ shipped[key].float() * scaling
        torch.testing.assert_close(trained[f"{module}.weight"], untrained[f"{module}.weight"] + delta)
        changed.add(f"{module}.weight")
    # everything else (the LLM above all) is the same pretrained weights in both builds
    for name, value in untrained.items():
        if not name.startswith("projector.") and name not in changed:
            assert torch.equal(trained[name], value), name
    provenance = json.loads(SHIPPED_PROJECTOR.with_suffix(".json").read_text())
    assert provenance["tensors"] == {k: list(v.shape) for k, v in shipped.items()}


@pytest.mark.integration
def test_untrained_builds_start_from_the_same_projector(tmp_path):
    """The projector's initialisation is seeded: a training recipe starts from the same weights every time."""
    from audio_minichat.default_model import DEFAULT_ENCODER, DEFAULT_LLM, build_model

    a = build_model(DEFAULT_LLM, DEFAULT_ENCODER, tmp_path / "a")
    b = build_model(DEFAULT_LLM, DEFAULT_ENCODER, tmp_path / "b", projector_type="mlp", projector_hidden_size=64)
    c = build_model(DEFAULT_LLM, DEFAULT_ENCODER, tmp_path / "c")
    pa, pb, pc = (AudioMiniChatForConditionalGeneration.from_pretrained(d).projector.state_dict() for d in (a, b, c))
    assert pa.keys() == pc.keys() and all(torch.equal(pa[k], pc[k]) for k in pa)
    assert [tuple(v.shape) for v in pb.values()] == [(64, 384), (64,), (576, 64), (576,)]
    assert pa["net.0.weight"].std() > 0  # initialised, not zeros
