"""scripts/margin_interval.py: per-item hearing margins read back from a study's records, and the paired interval."""

from __future__ import annotations

import importlib.util

import pytest
from conftest import REPO_ROOT

spec = importlib.util.spec_from_file_location("margin_interval", REPO_ROOT / "scripts" / "margin_interval.py")
mi = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mi)


def overlap(preds, refs):  # a pairwise score: shared words x 10
    return [10.0 * len(set(p.split()) & set(r.split())) for p, r in zip(preds, refs)]


def records():
    texts = {"a": "red fox runs", "b": "blue whale sings", "c": "green frog jumps"}
    out = [{"model": "reference", "system": "text", "set": "prompts", "id": k, "output": v} for k, v in texts.items()]
    out += [{"model": "/x/hears", "system": "e2e", "set": "prompts", "id": k, "output": v} for k, v in texts.items()]
    out += [{"model": "/x/constant", "system": "e2e", "set": "prompts", "id": k, "output": "red whale"} for k in texts]
    return out


def test_a_constant_arm_has_no_margin_and_an_arm_that_hears_does():
    assert mi.per_item_margins(records(), "hears", "prompts", overlap) == {"a": 30.0, "b": 30.0, "c": 30.0}
    constant = mi.per_item_margins(records(), "constant", "prompts", overlap)
    assert sum(constant.values()) == pytest.approx(0.0)  # the prior's answer: as close to the others' as to its own
    with pytest.raises(SystemExit, match=r"no e2e answers of 'missing' on 'prompts'"):
        mi.per_item_margins(records(), "missing", "prompts", overlap)
    assert mi.interval([float(v) for v in range(100)]) == (5.0, 94.0)
