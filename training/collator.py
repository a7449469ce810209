"""Rows of a prepared data set (audio, transcript, prompt, response) -> a student batch and the teacher's text batch."""

from __future__ import annotations

import io

import numpy as np

from ..processing_audio_minichat import AudioMiniChatProcessor, load_audio
from .config import DataConfig

TEACHER_PREFIX = "teacher_"


def decode_audio(value, where: str) -> np.ndarray:
    """A dataset audio cell (array dict, bytes dict from ``Audio(decode=False)``, or path) -> 16 kHz array."""
    if isinstance(value, dict) and value.get("array") is None and value.get("bytes"):
        import soundfile as sf

        try:
            data, rate = sf.read(io.BytesIO(value["bytes"]), dtype="float32", always_2d=True)
        except Exception as exc:
            raise ValueError(f"{where}: cannot decode audio bytes: {exc}") from None
        return load_audio(data, rate, name=where)
    if isinstance(value, dict) and value.get("array") is None and value.get("path"):
        return load_audio(value["path"], name=where)
    return load_audio(value, None if not isinstance(value, dict) else value.get("sampling_rate"), name=where)


class DistillationCollator:
    """Rows -> the audio-prompt batch (student, with labels on the response) and ``teacher_*``: the same prompts
    with the transcript in place of the audio (the teacher's text batch)."""

    def __init__(self, processor: AudioMiniChatProcessor, data_cfg: DataConfig):
        self.processor = processor
        self.cfg = data_cfg

    def __call__(self, rows: list[dict]) -> dict:
        c, proc = self.cfg, self.processor
        clips, audio_prompts, text_prompts, responses = [], [], [], []
        for i, row in enumerate(rows):
            where = f"row {row.get('__index__', i)}"
            for col in (c.audio_column, c.transcript_column, c.prompt_column, c.response_column):
                if col not in row:
                    raise KeyError(f"{where}: missing column {col!r}; columns are {sorted(row)}.")
            prompt = row[c.prompt_column]
            if prompt.count(proc.audio_token) != 1:
                raise ValueError(f"{where}: the prompt must hold exactly one {proc.audio_token}; got {prompt!r}.")
            if not str(row[c.response_column]).strip():
                raise ValueError(f"{where}: empty response.")
            if not str(row[c.transcript_column]).strip():
                raise ValueError(f"{where}: empty transcript.")
            clips.append(decode_audio(row[c.audio_column], where))
            audio_prompts.append(proc.build_prompt(prompt))
            text_prompts.append(proc.build_prompt(prompt, transcripts=[row[c.transcript_column]]))
            responses.append(row[c.response_column])
        rate = proc.layout.sampling_rate
        batch = dict(proc(text=audio_prompts, audio=clips, sampling_rate=rate, responses=responses, padding_side="right"))
        teacher = proc(text=text_prompts, responses=responses, padding_side="right")
        batch.update({f"{TEACHER_PREFIX}{k}": v for k, v in teacher.items()})
        return batch


def split_batch(batch: dict) -> tuple[dict, dict]:
    """A DistillationCollator batch -> (student inputs incl. labels, teacher inputs incl. labels)."""
    teacher = {k[len(TEACHER_PREFIX) :]: v for k, v in batch.items() if k.startswith(TEACHER_PREFIX)}
    student = {k: v for k, v in batch.items() if not k.startswith(TEACHER_PREFIX)}
    return student, teacher


__all__ = ["DistillationCollator", "decode_audio", "split_batch"]
