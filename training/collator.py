"""Rows of a prepared data set (audio, transcript, prompt, response) -> a student batch and the teacher's text batch."""

from __future__ import annotations

import io

import numpy as np

from ..audio_spans import check_spans
from ..audio_io import load_audio
from ..processing_audio_minichat import AudioMiniChatProcessor
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
    with the transcript in place of the audio (the teacher's text batch). A model that pools over spans
    (``processor.frontend.needs_spans``: ``audio_frontend="ctc_pool"``) also gets each row's ``spans_column`` (its
    ``[start_s, end_s]`` word spans) as ``audio_spans``."""

    def __init__(self, processor: AudioMiniChatProcessor, data_cfg: DataConfig):
        self.processor = processor
        self.cfg = data_cfg

    def __call__(self, rows: list[dict]) -> dict:
        c, proc = self.cfg, self.processor
        clips, audio_prompts, text_prompts, responses = [], [], [], []
        spans = [] if proc.frontend.needs_spans else None
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
            if spans is not None:
                spans.append(self.row_spans(row, where, clips[-1].shape[0] / proc.layout.sampling_rate))
            audio_prompts.append(proc.build_prompt(prompt))
            text_prompts.append(proc.build_prompt(prompt, transcripts=[row[c.transcript_column]]))
            responses.append(row[c.response_column])
        rate = proc.layout.sampling_rate
        batch = dict(proc(text=audio_prompts, audio=clips, sampling_rate=rate, audio_spans=spans, responses=responses,
                          padding_side="right"))
        teacher = proc(text=text_prompts, responses=responses, padding_side="right")
        batch.update({f"{TEACHER_PREFIX}{k}": v for k, v in teacher.items()})
        return batch

    def row_spans(self, row: dict, where: str, seconds: float) -> list:
        """The row's spans column, checked: [start_s, end_s] pairs, 0 <= start < end, inside the clip."""
        col = self.cfg.spans_column
        if col not in row or row[col] is None:
            raise KeyError(
                f"{where}: this model pools over word spans (audio_frontend={self.processor.frontend.name!r}) but the row "
                f"has no {col!r}; build the data with word spans (data config `word_spans: whisper` or "
                f"`{{source: ctc, model: DIR}}`) or point data.spans_column at the spans; columns are {sorted(row)}."
            )
        problem = check_spans(row[col], seconds, ordered=False, slack=0.02)
        if problem:
            raise ValueError(f"{where}: bad {col!r} for a {seconds:.3f} s clip: {problem}.")
        value = row[col]
        return value.tolist() if hasattr(value, "tolist") else [list(s) for s in value]


def split_batch(batch: dict) -> tuple[dict, dict]:
    """A DistillationCollator batch -> (student inputs incl. labels, teacher inputs incl. labels)."""
    teacher = {k[len(TEACHER_PREFIX) :]: v for k, v in batch.items() if k.startswith(TEACHER_PREFIX)}
    student = {k: v for k, v in batch.items() if not k.startswith(TEACHER_PREFIX)}
    return student, teacher


__all__ = ["DistillationCollator", "decode_audio", "split_batch"]
