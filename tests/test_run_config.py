"""Run configs inherit: ``base: other.yaml`` merges that file's settings under the file's own (training/config.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from audio_minichat.training.config import RunConfig


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_config_inherits_its_base_key_by_key(tmp_path):
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "arm" / "other-data").mkdir(parents=True)
    write(tmp_path / "shared" / "base.yaml",
          "model: m\noutput_dir: runs/base\nlosses: {ntp: 0.5, logit: 0.5, feature_layers: [-1, 2]}\n"
          "data: {train: data, cache_dir: cache, max_eval_samples: 48}\ntraining: {learning_rate: 0.001, max_steps: 10}\n")
    child = write(tmp_path / "arm" / "child.yaml",
                  "base: ../shared/base.yaml\noutput_dir: runs/child\nlosses: {feature_layers: [-1]}\n"
                  "data: {validation: other-data, cache_dir: null}\ntraining: {max_steps: 20}\n")
    cfg = RunConfig.from_yaml(str(child))
    assert cfg.output_dir == "runs/child" and cfg.model == "m"
    assert (cfg.losses.ntp, cfg.losses.logit, cfg.losses.feature_layers) == (0.5, 0.5, [-1])  # a list is replaced
    assert cfg.training == {"learning_rate": 0.001, "max_steps": 20}  # a mapping merges
    # relative paths are relative to the file that names them
    assert cfg.data.train == str((tmp_path / "shared" / "data").resolve())
    assert cfg.data.validation == str((tmp_path / "arm" / "other-data").resolve())
    assert cfg.data.cache_dir is None and cfg.data.max_eval_samples == 48


def test_a_bad_base_chain_is_one_clear_line(tmp_path):
    a = write(tmp_path / "a.yaml", "base: b.yaml\noutput_dir: a\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(ValueError, match=r"a.yaml: its base: chain comes back to itself \(.*a.yaml -> .*b.yaml -> .*a.yaml\)\.$"):
        RunConfig.from_yaml(str(a))
    lost = write(tmp_path / "c.yaml", "base: missing.yaml\n")
    with pytest.raises(ValueError, match=r"missing.yaml: no such config file \(the base: of .*c.yaml\)\.$"):
        RunConfig.from_yaml(str(lost))
    write(tmp_path / "e.yaml", "bogus: 1\n")  # a base's unknown key is refused like the file's own
    with pytest.raises(ValueError, match=r"Unknown config keys \['bogus'\]"):
        RunConfig.from_yaml(str(write(tmp_path / "d.yaml", "base: e.yaml\n")))


def test_the_study_arms_hold_only_what_differs_from_their_base():
    study = sorted((REPO_ROOT / "configs" / "study").glob("*.yaml"))
    resolved = {p.stem: RunConfig.from_yaml(str(p)).to_dict() for p in study}
    for path in study:
        settings = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
        base = re.match(r"base: (\S+)", settings[0]) if settings else None
        if path.stem == "pool_baseline":  # arm A: the one full file
            assert base is None
            continue
        assert base and len(settings) <= 8, path.name
        parent = resolved[Path(base.group(1)).stem]
        assert resolved[path.stem]["output_dir"] != parent["output_dir"]
    n384, n767 = resolved["qformer_dense_lora_base_n384"], resolved["qformer_dense_lora_base_n767"]
    assert {k for k in n384 if n384[k] != n767[k]} == {"output_dir", "data"}
    assert {k for k in n384["data"] if n384["data"][k] != n767["data"][k]} == {"max_train_samples"}
