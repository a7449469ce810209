"""The data build's configuration: defaults (the instruction prompts included) merged with a YAML file
(``configs/data_default.yaml``) and command-line overrides."""

from __future__ import annotations

from typing import Optional


DEFAULT_INSTRUCTIONS = [
    {"text": "Summarize:", "position": "before"},
    {"text": "Summarize this in one sentence.", "position": "after"},
    {"text": "Repeat this:", "position": "before"},
    {"text": "Repeat this back to me word for word.", "position": "after"},
    {"text": "What is the main point of the following?", "position": "before"},
    {"text": "Answer or respond to this:", "position": "before"},
    {"text": "Rewrite this more simply.", "position": "after"},
    {"text": "Translate this into plain, simple English:", "position": "before"},
    {"text": "Give a short title for this.", "position": "after"},
    {"text": "Continue the following text:", "position": "before"},
]

# Dense lexical targets (prompts.dense_fraction of the rows): prompts whose text answer repeats or closely follows
# the content, so the distillation target carries the speech's wording ("hear every word"); the teacher's answer
# is still the target.
DEFAULT_DENSE_INSTRUCTIONS = [
    {"text": "Repeat exactly what was said.", "position": "after"},
    {"text": "Write down what the speaker said.", "position": "after"},
    {"text": "List the key facts in what was said.", "position": "after"},
    {"text": "Repeat this word for word:", "position": "before"},
]

DEFAULT_CONFIG: dict = {
    "out": "data/default",
    "num": 2000,
    "seed": 0,
    "validation_fraction": 0.05,
    "shard_size": 250,
    "workers": 2,
    "max_seconds": 30.0,
    "text": {"sources": None, "min_words": 5, "max_words": 60, "per_doc": 2, "extra_documents": {}},
    "voices": {"n": 64, "seed": 0, "engines": None, "list": None},
    "prompts": {"instruction_fraction": 0.25, "instructions": DEFAULT_INSTRUCTIONS,
                "dense_fraction": 0.0, "dense_instructions": DEFAULT_DENSE_INSTRUCTIONS},
    "teacher": {
        "model": "default",  # "default" -> assets.default_build.build_default(), else an AudioMiniChat checkpoint dir
        "dtype": "bfloat16",
        "batch_size": 16,
        "max_new_tokens_factor": 2.0,
        "max_new_tokens_cap": 128,
        "min_new_tokens": 16,
        "trim_incomplete": True,  # an answer cut by the budget loses its unfinished last sentence
        "threads": None,
        "system": None,
    },
    "hf_dataset": None,  # {"name": NAME_OR_PATH, "audio_column", "text_column", "split", "voice_column"}
    # word spans for downsample="ctc_pool" (the `word_spans` column): null (off), "whisper", "ctc" or
    # {source, model, batch_size, threads, device}; see dataprep.word_spans
    "word_spans": None,
}


# ------------------------------------------------------------------------------------------------ config


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(path: Optional[str] = None, overrides: Optional[dict] = None) -> dict:
    raw = {}
    if path:
        import yaml

        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh) or {}
    unknown = set(raw) - set(DEFAULT_CONFIG)
    if unknown:
        raise ValueError(f"unknown config keys {sorted(unknown)}; expected some of {sorted(DEFAULT_CONFIG)}")
    cfg = _merge(DEFAULT_CONFIG, raw)
    return _merge(cfg, overrides or {})
