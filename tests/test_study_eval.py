"""The study's measurements answer for the weights they were made with (eval/study.py)."""

from pathlib import Path

from safetensors.torch import save_file
import torch

from audio_minichat.eval.study import _load, drop_stale, recorded_models, weights_id


def _weights(folder: Path, name: str, value: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"w": torch.full((4,), value)}, str(folder / name))


def test_weights_id_follows_the_trained_tensors(tmp_path):
    _weights(tmp_path, "model.safetensors", 0.0)
    whole = weights_id(tmp_path)
    _weights(tmp_path, "trained_weights.safetensors", 1.0)  # a run's final/: its trained part decides
    trained = weights_id(tmp_path)
    assert trained != whole and len(trained) == 12
    _weights(tmp_path, "model.safetensors", 2.0)
    assert weights_id(tmp_path) == trained
    _weights(tmp_path, "trained_weights.safetensors", 3.0)  # trained further
    assert weights_id(tmp_path) != trained


def test_records_of_other_weights_are_measured_again(tmp_path):
    lines = [
        '{"model": "runs/a/final", "system": "e2e", "set": "xsum", "id": "1", "output": "old", "weights": "aaa"}',
        '{"model": "runs/a/final", "system": "e2e", "set": "xsum", "id": "2", "output": "new", "weights": "bbb"}',
        '{"model": "runs/a/final", "system": "e2e", "set": "prompts", "id": "p", "output": "unrecorded weights"}',
        '{"model": "runs/b/final", "system": "e2e", "set": "xsum", "id": "1", "output": "other model", "weights": "aaa"}',
        '{"model": "reference", "system": "text", "set": "xsum", "id": "1", "output": "text"}',
        '{"model": "runs/a/final", "system": "e2e", "set": "xsum", "id": "3", "output": "cut by a ki',
    ]
    path = tmp_path / "records.jsonl"
    path.write_text("\n".join(lines) + "\n")
    done = _load(path)
    assert len(done) == 5  # the cut line is skipped
    assert drop_stale(done, "runs/a/final", "e2e", "bbb") == 1
    assert ("runs/a/final", "e2e", "xsum", "1") not in done
    assert done[("runs/a/final", "e2e", "xsum", "2")]["output"] == "new"
    assert ("runs/a/final", "e2e", "prompts", "p") in done
    assert ("runs/b/final", "e2e", "xsum", "1") in done and ("reference", "text", "xsum", "1") in done
    assert drop_stale(done, "runs/a/final", "e2e", "bbb") == 0


def test_the_summary_covers_every_recorded_model(tmp_path):
    lines = [
        '{"model": "reference", "system": "text", "set": "xsum", "id": "1", "output": "text"}',
        '{"model": "runs/study/a/final", "system": "e2e", "set": "xsum", "id": "1", "output": "a", "weights": "aaa"}',
        '{"model": "runs/study/b/final", "system": "e2e", "set": "xsum", "id": "1", "output": "b", "weights": "bbb"}',
        '{"model": "runs/study/a/final", "system": "e2e", "set": "prompts", "id": "p", "output": "a", "weights": "aaa"}',
    ]
    (tmp_path / "records.jsonl").write_text("\n".join(lines) + "\n")
    done = _load(tmp_path / "records.jsonl")
    # a later sitting measures one new model and one measured before: the earlier arms stay in the summary, in order
    assert recorded_models(done, ["runs/new/c/final/", "runs/study/b/final"]) == [
        "runs/study/a/final", "runs/study/b/final", "runs/new/c/final"]
    assert recorded_models({}, ["x/final"]) == ["x/final"]


def test_the_summary_reports_hearing_margins(tmp_path):
    """summarize() beside each ROUGE figure: an e2e arm that writes one sentence whatever it hears has margin 0
    while its ROUGE is well above 0; the cascade, which copies the text answers here, has a large margin."""
    import json
    from types import SimpleNamespace

    from audio_minichat.eval.study import summarize

    texts = {"1": "The council approved a new library in the town centre.",
             "2": "Heavy rain flooded the main road near the river on Monday.",
             "3": "The football club signed a young striker from Brazil."}
    docs = [{"id": i, "summary": t, "document": t} for i, t in texts.items()]
    recs = []
    for set_name in ("xsum", "prompts"):
        for i, t in texts.items():
            recs.append({"model": "reference", "system": "text", "set": set_name, "id": i, "output": t})
            recs.append({"model": "reference", "system": "cascade", "set": set_name, "id": i, "output": t})
            recs.append({"model": "runs/arm/final", "system": "e2e", "set": set_name, "id": i,
                         "output": "The town council said the new plan would help people.", "weights": "w"})
    (tmp_path / "records.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    sets = {name: [(i,) for i in texts] for name in ("xsum", "prompts")}
    args = SimpleNamespace(voice="joe", num_docs=3, seed=0, max_new_tokens=60, prompt_max_new_tokens=96, models=[])
    rows = {r["system"]: r for r in summarize(_load(tmp_path / "records.jsonl"), docs, sets, args, tmp_path)["rows"]}
    assert rows["e2e"]["xsum_rougeL_vs_text"] > 5 and rows["e2e"]["agreement_rougeL"] > 5
    assert rows["e2e"]["xsum_vs_text_margin"] == 0 and rows["e2e"]["agreement_margin"] == 0
    assert rows["e2e"]["xsum_rouge1_margin"] == 0
    assert rows["cascade"]["xsum_vs_text_margin"] > 50 and rows["cascade"]["agreement_margin"] > 50
    assert rows["text"]["xsum_vs_text_margin"] is None
    assert "| prompts margin |" in (tmp_path / "summary.md").read_text()
