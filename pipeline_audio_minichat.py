"""Pipeline: audio (array or path) + optional text prompt -> the LLM's generated text.

    pipe = transformers.pipeline(model="path/to/checkpoint", trust_remote_code=True)
    pipe("talk.wav", prompt="Summarize the following speech in one sentence:")
    -> {"generated_text": "..."}
"""

from __future__ import annotations

from transformers import AutoModel, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .processing_audio_minichat import load_audio

PIPELINE_TASK = "audio-minichat"  # also named in modeling_audio_minichat (saved configs)


class AudioMiniChatPipeline(Pipeline):
    """Generate a response to a speech prompt, optionally with text before or after the audio.

    Call arguments: ``audio`` (path, array with ``sampling_rate``, or ``{"array", "sampling_rate"}``),
    ``prompt`` (text placed with the audio in the user turn), ``text_position`` (``"before"``: the
    prompt precedes the audio, the default; ``"after"``), ``audio_spans`` (``(start_s, end_s)`` pairs, for
    front ends that pool over spans), ``max_new_tokens`` and other ``generate`` arguments (``generate_kwargs``).
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
        processor = self.processor
        clip = load_audio(audio, sampling_rate, processor.layout.sampling_rate)
        parts = processor.audio_with_text(prompt, text_position)
        return processor(text=processor.build_prompt(parts), audio=[clip], sampling_rate=processor.layout.sampling_rate,
                         audio_spans=None if audio_spans is None else [audio_spans])

    def _forward(self, model_inputs, **generate_kwargs):
        generate_kwargs.setdefault("max_new_tokens", 128)
        generate_kwargs.setdefault("do_sample", False)
        prompt_length = model_inputs["input_ids"].shape[1]
        dtype = next(self.model.parameters()).dtype
        model_inputs = {k: (v.to(dtype) if k == "input_features" else v) for k, v in model_inputs.items()}
        output = self.model.generate(**model_inputs, **generate_kwargs)
        return {"new_tokens": output[:, prompt_length:]}

    def postprocess(self, model_outputs):
        text = self.processor.batch_decode(model_outputs["new_tokens"], skip_special_tokens=True)[0]
        return {"generated_text": text.strip()}


def register_pipeline(pipeline_class=AudioMiniChatPipeline) -> None:
    if PIPELINE_TASK not in PIPELINE_REGISTRY.get_supported_tasks():
        PIPELINE_REGISTRY.register_pipeline(PIPELINE_TASK, pipeline_class=pipeline_class, pt_model=AutoModel)


__all__ = ["AudioMiniChatPipeline", "PIPELINE_TASK", "register_pipeline"]
