"""The shipped variants hear as they did: each variant's saved config.json and processor_config.json (the flat files
its build wrote before the front-end options moved into sub-configs; tests/data/variants/<name>/) load, with the
build's weights, into a model whose logits on a fixed clip equal the values recorded then
(tests/data/variants/logits_digest.json: the top 5 logits at the prompt's last 4 positions, and the prompt's ids).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, tolerances

from audio_minichat import AudioMiniChatConfig, AudioMiniChatForConditionalGeneration, AudioMiniChatProcessor
from audio_minichat.assets.default_build import VARIANTS, build_default

DATA = REPO_ROOT / "tests" / "data" / "variants"
DIGEST = json.loads((DATA / "logits_digest.json").read_text())
SAVED = ("config.json", "processor_config.json")  # the flat files of the build before the sub-configs
# Variants added after the front-end options moved into sub-configs: no flat files of theirs ever existed; their
# digest was recorded from their first build (posterior_ctc, posterior_ctc_conv: 2026-12-07).
LATER = ("posterior_ctc", "posterior_ctc_conv")
FLAT = sorted(set(VARIANTS) - set(LATER))


def test_every_shipped_variant_has_a_recorded_digest():
    assert sorted(DIGEST["variants"]) == sorted(VARIANTS)
    for name in VARIANTS:
        assert all((DATA / name / f).is_file() for f in SAVED) == (name not in LATER), name


@pytest.mark.parametrize("name", FLAT)
def test_flat_saved_files_load_into_the_front_end_and_its_options(name):
    from audio_minichat.configuration_audio_minichat import read_audio_layout

    old = json.loads((DATA / name / "config.json").read_text())
    config = AudioMiniChatConfig.from_dict(old)
    options = config.frontend_options
    assert config.audio_frontend == old["downsample"] == options.name
    assert config.frontend_config == {k: old[k] for k in type(options).option_names()}  # its own, as they were
    flat = ("downsample", "pool_kernel", "stack_factor", "qformer_queries", "audio_tokens_per_second", "asr_token_mixture")
    assert not any(k in config.to_dict() for k in flat)
    # the old processor_config.json: the layout held the front end and its options under other names
    # (the options the processor counts with: a layout held no decoding options)
    layout, read = read_audio_layout(json.loads((DATA / name / "processor_config.json").read_text())["audio_layout"])
    assert layout == config.audio_layout() and read.name == options.name
    for seconds in (0.05, 1.0, 7.3, 30.0, 61.5):
        n = int(seconds * 16000)
        assert read.num_embeddings(layout, n) == options.num_embeddings(layout, n) > 0


def test_front_end_options_are_checked_where_they_are_declared():
    with pytest.raises(ValueError, match=r"^frontend_config of audio_frontend='pool': unknown option\(s\) \['stack_factor'\]; "
                                         r"its options are \['pool_kernel', 'pool_stride'\]\.$"):
        AudioMiniChatConfig(frontend_config={"stack_factor": 3})
    with pytest.raises(ValueError, match=r"^stack_factor is an option of audio_frontend='stack', not of 'pool'\.$"):
        AudioMiniChatConfig(downsample="pool", stack_factor=3)  # the old flat form, with another front end's option
    assert AudioMiniChatConfig(downsample="pool", stack_factor=4).frontend_config == {"pool_kernel": 8, "pool_stride": 4}
    with pytest.raises(ValueError, match=r"^'downsample' \(the old name of 'audio_frontend'\) is 'pool' but 'audio_frontend' is 'stack'\.$"):
        AudioMiniChatConfig(downsample="pool", audio_frontend="stack")
    with pytest.raises(ValueError, match=r"given both as top-level keys and in frontend_config"):
        AudioMiniChatConfig(audio_frontend="stack", stack_factor=2, frontend_config={"stack_factor": 3})
    with pytest.raises(ValueError, match=r"^audio_frontend='pool': pool_stride must be a positive integer, got 0\.$"):
        AudioMiniChatConfig(frontend_config={"pool_stride": 0})
    with pytest.raises(ValueError, match=r"^audio_frontend must be one of \('pool', 'stack', 'ctc_pool', 'asr_tokens', 'qformer', 'posterior'\), got 'mean'\.$"):
        AudioMiniChatConfig(audio_frontend="mean")


def with_saved_configs(build: Path, into: Path, name: str) -> Path:
    """The build's files (weights, tokenizers, ...) with the saved pre-refactor config files in place of its own."""
    into.mkdir()
    for item in build.iterdir():
        if item.name not in SAVED and not item.name.startswith("."):
            (into / item.name).symlink_to(item, target_is_directory=item.is_dir())
    for f in SAVED:
        shutil.copyfile(DATA / name / f, into / f)
    return into


def logits_at_the_end(folder: Path) -> torch.Tensor:
    """The model's logits at the fixed prompt's last 4 positions, and a check of the prompt's ids."""
    model = AudioMiniChatForConditionalGeneration.from_pretrained(folder).eval()
    processor = AudioMiniChatProcessor.from_pretrained(folder)
    inputs = processor(text=processor.build_prompt(DIGEST["prompt"]), audio=[str(REPO_ROOT / DIGEST["clip"])])
    with torch.no_grad():
        return inputs["input_ids"][0].tolist(), model(**inputs).logits[0, -4:].float(), model


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_logits_equal_the_recorded_ones(name, tmp_path):
    recorded = DIGEST["variants"][name]
    build = build_default(variant=name)
    if name in LATER:  # its own build's files, as they were at its first build
        ids, logits, model = logits_at_the_end(build)
        assert ids == recorded["input_ids"]
        tol = tolerances(model.dtype, reduction=model.config.text_config.hidden_size)
        torch.testing.assert_close(logits.gather(1, torch.tensor(recorded["top5_ids"])), torch.tensor(recorded["top5_values"]),
                                   rtol=tol["rtol"], atol=tol["atol"] + 1e-5)
        assert logits.argmax(-1).tolist() == [row[0] for row in recorded["top5_ids"]]
        return
    ids, logits, model = logits_at_the_end(with_saved_configs(build, tmp_path / name, name))

    # the flat file loads into the same configuration that a save and reload of it gives
    model.config.save_pretrained(tmp_path / "resaved")
    resaved = AudioMiniChatConfig.from_pretrained(tmp_path / "resaved").to_dict()
    assert {**resaved, "_name_or_path": None} == {**model.config.to_dict(), "_name_or_path": None}
    assert "downsample" not in resaved and resaved["audio_frontend"] == json.loads((DATA / name / "config.json").read_text())["downsample"]

    assert ids == recorded["input_ids"]  # same placeholder count, same prompt
    top = torch.tensor(recorded["top5_ids"])
    # the LLM's logits are sums over its hidden size; the recorded values are rounded to 1e-5
    tol = tolerances(model.dtype, reduction=model.config.text_config.hidden_size)
    torch.testing.assert_close(logits.gather(1, top), torch.tensor(recorded["top5_values"]),
                               rtol=tol["rtol"], atol=tol["atol"] + 1e-5)
    assert logits.argmax(-1).tolist() == [row[0] for row in recorded["top5_ids"]]

    # the build's own files (written by this code) give the same
    own_ids, own_logits, _ = logits_at_the_end(build)
    assert own_ids == ids
    torch.testing.assert_close(own_logits, logits, **tol)
