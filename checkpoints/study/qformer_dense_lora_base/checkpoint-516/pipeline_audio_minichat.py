"""Pipeline: audio (array or path) + optional text prompt -> the LLM's generated text.

    pipe = transformers.pipeline(model="path/to/checkpoint", trust_remote_code=True)
    pipe("talk.wav", prompt="Summarize the following speech in one sentence:")
    -> {"generated_text": "..."}
    pipe(["a.wav", "b.wav"], prompt="...", batch_size=2)   # batched: one prompt per clip, left-padded together
"""

from __future__ import annotations

import collections.abc

from torch.utils.data import DataLoader
from transformers import AutoModel, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.pt_utils import PipelineDataset, PipelineIterator

from .processing_audio_minichat import load_audio

PIPELINE_TASK = "audio-minichat"  # also named in modeling_audio_minichat (saved configs)


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
                             generate_kwargs=None, audio_spans=None, **kwargs):
        pre, fwd = {}, dict(generate_kwargs or {})
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

    def preprocess(self, audio, prompt: str | None = None, text_position: str = "before", sampling_rate=None, audio_spans=None):
        """One request: its rendered prompt and its clip (the processor runs in :meth:`collate`, per batch)."""
        processor = self.processor
        clip = load_audio(audio, sampling_rate, processor.layout.sampling_rate)
        return {"prompt": processor.build_prompt(processor.audio_with_text(prompt, text_position)), "clip": clip,
                "spans": audio_spans}

    def collate(self, requests: list[dict]):
        """Requests -> one model batch: every clip's windows tagged with its own clip, prompts left-padded."""
        spans = [r["spans"] for r in requests]
        return self.processor(text=[r["prompt"] for r in requests], audio=[r["clip"] for r in requests],
                              sampling_rate=self.processor.layout.sampling_rate,
                              audio_spans=None if all(s is None for s in spans) else spans)

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
        # decoding: the checkpoint's generation_config.json (max_new_tokens, greedy, ...), unless the call says otherwise
        prompt_length = model_inputs["input_ids"].shape[1]
        dtype = next(self.model.parameters()).dtype
        device = self.model.device
        model_inputs = {k: (v.to(device, dtype) if k == "input_features" else v.to(device)) for k, v in model_inputs.items()}
        output = self.model.generate(**model_inputs, **generate_kwargs)
        return {"new_tokens": output[:, prompt_length:]}

    def postprocess(self, model_outputs):
        text = self.processor.batch_decode(model_outputs["new_tokens"], skip_special_tokens=True)[0]
        return {"generated_text": text.strip()}


def register_pipeline(pipeline_class=AudioMiniChatPipeline) -> None:
    if PIPELINE_TASK not in PIPELINE_REGISTRY.get_supported_tasks():
        PIPELINE_REGISTRY.register_pipeline(PIPELINE_TASK, pipeline_class=pipeline_class, pt_model=AutoModel)


__all__ = ["AudioMiniChatPipeline", "PIPELINE_TASK", "register_pipeline"]
