"""Pipeline: audio (array or path) + optional text prompt -> the LLM's generated text.

    pipe = transformers.pipeline(model="path/to/checkpoint", trust_remote_code=True)
    pipe("talk.wav", prompt="Summarize the following speech in one sentence:")
    -> {"generated_text": "..."}
    pipe(["a.wav", "b.wav"], prompt="...", batch_size=2)   # batched: one prompt per clip, left-padded together

Audio with no speech (digital silence, a clip under 0.1 s, nothing louder than -55 dBFS: the energy part of the
CLI's speech check, audio_io.energy_check) is not answered, as the CLI does not answer it: ``generated_text`` is
empty, the output has a ``warning`` ("no speech detected in ... (why); nothing to answer") and a UserWarning is
raised. The CLI also asks Whisper's no-speech probability about a steady signal (noise, hum) that is loud enough;
the pipeline does not, so such a clip is answered here. ``check_speech=False`` answers every clip.
"""

from __future__ import annotations

import collections.abc
import os
import warnings

from torch.utils.data import DataLoader
from transformers import AutoModel, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.pt_utils import PipelineDataset, PipelineIterator

from .configuration_audio_minichat import PIPELINE_TASK
from .audio_io import energy_check
from .audio_io import load_audio


class AudioMiniChatPipeline(Pipeline):
    """Generate a response to a speech prompt, optionally with text before or after the audio.

    Call arguments: ``audio`` (path, array with ``sampling_rate``, or ``{"array", "sampling_rate"}``; or a list
    of them), ``prompt`` (text placed with the audio in the user turn), ``text_position`` (``"before"``: the
    prompt precedes the audio, the default; ``"after"``), ``audio_spans`` (``(start_s, end_s)`` pairs, for
    front ends that pool over spans), ``max_new_tokens`` and other ``generate`` arguments (``generate_kwargs``).
    With ``batch_size > 1`` the clips of a batch go through the processor together (its own collate: each clip
    keeps its own windows, prompts are left-padded), so each answer is the one that clip gets alone.
    """

    _load_processor = True
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_image_processor = False

    def _sanitize_parameters(self, prompt=None, text_position=None, sampling_rate=None, max_new_tokens=None,
                             generate_kwargs=None, audio_spans=None, check_speech=None, **kwargs):
        pre, fwd = {}, dict(generate_kwargs or {})
        if check_speech is not None:
            pre["check_speech"] = bool(check_speech)
        if audio_spans is not None:
            pre["audio_spans"] = audio_spans
        if prompt is not None:
            pre["prompt"] = prompt
        if text_position is not None:
            pre["text_position"] = text_position
        if sampling_rate is not None:
            pre["sampling_rate"] = sampling_rate
        if max_new_tokens is not None:
            fwd["max_new_tokens"] = max_new_tokens
        fwd.update(kwargs)
        return pre, fwd, {}

    def preprocess(self, audio, prompt: str | None = None, text_position: str = "before", sampling_rate=None, audio_spans=None,
                   check_speech: bool = True):
        """One request: its rendered prompt, its clip (the processor runs in :meth:`collate`, per batch) and, for
        a clip without speech, the warning that replaces its answer."""
        processor = self.processor
        clip = load_audio(audio, sampling_rate, processor.layout.sampling_rate)
        warning = None
        if check_speech:
            reason, _ = energy_check(clip, processor.layout.sampling_rate)
            if reason is not None:
                where = os.fspath(audio) if isinstance(audio, (str, os.PathLike)) else "the audio"
                warning = f"no speech detected in {where} ({reason}); nothing to answer"
        return {"prompt": processor.build_prompt(processor.audio_with_text(prompt, text_position)), "clip": clip,
                "spans": audio_spans, "warning": warning}

    def collate(self, requests: list[dict]):
        """Requests -> one model batch: every clip's windows tagged with its own clip, prompts left-padded."""
        spans = [r["spans"] for r in requests]
        batch = self.processor(text=[r["prompt"] for r in requests], audio=[r["clip"] for r in requests],
                               sampling_rate=self.processor.layout.sampling_rate,
                               audio_spans=None if all(s is None for s in spans) else spans)
        batch["no_speech"] = [r.get("warning") for r in requests]
        return batch

    def get_iterator(self, inputs, num_workers: int, batch_size: int, preprocess_params, forward_params, postprocess_params):
        # transformers' default collate would concatenate the per-clip window index (every window -> clip 0) and pad
        # the prompts on its own; batches go through `collate` instead
        make = PipelineDataset if isinstance(inputs, collections.abc.Sized) else PipelineIterator
        dataset = make(inputs, self.preprocess, preprocess_params)
        loader = DataLoader(dataset, num_workers=num_workers, batch_size=batch_size, collate_fn=self.collate)
        model_iterator = PipelineIterator(loader, self.forward, forward_params, loader_batch_size=batch_size)
        return PipelineIterator(model_iterator, self.postprocess, postprocess_params)

    def _forward(self, model_inputs, **generate_kwargs):
        if "prompt" in model_inputs:  # a single call (no DataLoader): its own batch of one
            model_inputs = self.collate([model_inputs])
        no_speech = list(model_inputs.pop("no_speech", None) or [None] * model_inputs["input_ids"].shape[0])
        if all(no_speech):  # nothing in the batch to answer: the LLM does not run
            return {"new_tokens": model_inputs["input_ids"][:, :0], "no_speech": no_speech}
        # decoding: the checkpoint's generation_config.json (max_new_tokens, greedy, ...), unless the call says otherwise
        prompt_length = model_inputs["input_ids"].shape[1]
        dtype = next(self.model.parameters()).dtype
        device = self.model.device
        model_inputs = {k: (v.to(device, dtype) if k == "input_features" else v.to(device)) for k, v in model_inputs.items()}
        output = self.model.generate(**model_inputs, **generate_kwargs)
        return {"new_tokens": output[:, prompt_length:], "no_speech": no_speech}

    def postprocess(self, model_outputs):
        warning = model_outputs.get("no_speech")
        warning = warning[0] if isinstance(warning, list) else warning  # (a batch of one is not split up)
        if warning:
            warnings.warn(warning, stacklevel=2)
            return {"generated_text": "", "warning": warning}
        text = self.processor.batch_decode(model_outputs["new_tokens"], skip_special_tokens=True)[0]
        return {"generated_text": text.strip()}


def register_pipeline(pipeline_class=AudioMiniChatPipeline) -> None:
    if PIPELINE_TASK not in PIPELINE_REGISTRY.get_supported_tasks():
        PIPELINE_REGISTRY.register_pipeline(PIPELINE_TASK, pipeline_class=pipeline_class, pt_model=AutoModel)


__all__ = ["AudioMiniChatPipeline", "PIPELINE_TASK", "register_pipeline"]
