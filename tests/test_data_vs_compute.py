"""scripts/data_vs_compute.py: the effective-rows rule (fresh samples count in full, repeats less each time), the fit
recovering known parameters of curves made with it, and the one-line refusal of a run folder without evaluations."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from conftest import REPO_ROOT

spec = importlib.util.spec_from_file_location("data_vs_compute", REPO_ROOT / "scripts" / "data_vs_compute.py")
dvc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dvc)


def test_effective_rows_count_fresh_samples_in_full_and_repeats_less_each_time():
    samples = np.array([400.0, 800.0, 1600.0, 3200.0, 80000.0])
    assert dvc.effective_rows(samples, np.full(5, 1e12), 2.0).tolist() == samples.tolist()  # never repeated
    d = dvc.effective_rows(samples, np.full(5, 800.0), 2.0)
    assert d[:2].tolist() == [400.0, 800.0]  # the first pass is fresh
    assert 800 < d[2] < 1600 and d[2] < d[3] < 3200  # repeats add, each less than a fresh row
    assert d[4] == pytest.approx(800 + 800 * 2.0, rel=1e-6)  # many passes: at most U (1 + R*)


def test_the_fit_recovers_the_parameters_of_curves_made_with_its_form():
    truth = {"E": 2.4, "A": 60.0, "alpha": 0.5, "R_star": 3.0}
    samples = np.tile(np.arange(1600.0, 9601.0, 1600.0), 3)
    unique = np.repeat([1e12, 3200.0, 800.0], 6)
    loss = dvc.predict(truth, samples, unique)
    got = dvc.fit(samples, unique, loss)
    assert got["rmse"] < 0.01
    assert got["E"] == pytest.approx(2.4, abs=0.05) and got["alpha"] == pytest.approx(0.5, abs=0.02)
    assert got["R_star"] == pytest.approx(3.0, rel=0.15)


def test_a_run_folder_without_evaluations_is_refused_in_one_line(tmp_path):
    (tmp_path / "progress.jsonl").write_text(json.dumps({"step": 0, "rows": 0, "eval": {}}) + "\n")
    with pytest.raises(SystemExit, match=r"progress.jsonl: no evaluation between steps 1 and 600"):
        dvc.read_run(tmp_path, 600)
    (tmp_path / "progress.jsonl").write_text("{not json\n")
    with pytest.raises(SystemExit, match=r"progress.jsonl:1: not JSON"):
        dvc.read_run(tmp_path, 600)


def test_a_run_named_neither_fresh_nor_a_row_count_is_refused_in_one_line(tmp_path):
    with pytest.raises(SystemExit, match=r"--run 'big=x': expected NAME=FOLDER, NAME 'fresh' or the run's --unique-rows"):
        dvc.main(["--run", "big=x", "--out", str(tmp_path / "p.png")])
