"""AudioMiniChat: an audio front end -> embeddings in a frozen causal LLM's prompt.

The model follows Kang & Roy (Interspeech 2024): a front end (``config.audio_frontend``, one class each, see
``frontends.py``) turns speech into LLM-space embeddings — encoder frames average-pooled, stacked or pooled over
spans and projected (the paper), or Whisper's decoding read as token embeddings — and the model writes them into
the positions of the ``<|audio|>`` placeholder tokens of a chat prompt.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, GenerationMixin, LogitsProcessor, LogitsProcessorList, PreTrainedModel
from transformers.generation.logits_process import NoRepeatNGramLogitsProcessor
from transformers.modeling_outputs import CausalLMOutputWithPast

from .audio_lora import AudioGate, AudioLoRA
from .configuration_audio_minichat import (DEFAULT_FRONTEND, PIPELINE_TASK, AudioMiniChatConfig, frontend_config_class,
                                           upgrade_legacy_keys)
from .frontend_base import ASR_MODEL_CLASSES, AudioFrontEnd, AudioFrontEndOutput
from .frontends import frontend_class

# the processor's audio inputs: mel features (input_features) or, for waveform encoders, the raw samples (input_values)
AUDIO_INPUT_NAMES = ("input_features", "input_features_mask", "input_values", "input_values_mask", "audio_window_clip", "audio_spans")
# Remote-code files the model's own imports do not reach but a checkpoint needs: the pipeline
# (``pipeline(model=dir, trust_remote_code=True)``). Copied beside the model's code on save, never imported here.
EXTRA_REMOTE_CODE = ("pipeline_audio_minichat.py",)


class AnswerNoRepeatNGram(LogitsProcessor):
    """No n-gram twice within the generated answer (the tokens after the first ``prompt_length``): transformers'
    ``NoRepeatNGramLogitsProcessor`` applied to the answer alone, so the prompt's n-grams stay allowed."""

    def __init__(self, ngram_size: int, prompt_length: int):
        self.prompt_length = int(prompt_length)
        self.within = NoRepeatNGramLogitsProcessor(int(ngram_size))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return self.within(input_ids[:, self.prompt_length :], scores)


@dataclass
class AudioMiniChatOutput(CausalLMOutputWithPast):
    """The LLM's output plus, when asked (``output_audio_embeddings=True``), the front end's output per clip."""

    audio_embeddings: tuple[torch.Tensor, ...] | None = None
    # front ends that read ASR tokens: per clip, the ASR token behind each filled audio slot
    audio_token_ids: tuple[torch.Tensor, ...] | None = None


class AudioMiniChatPreTrainedModel(PreTrainedModel):
    config_class = AudioMiniChatConfig
    base_model_prefix = ""
    supports_gradient_checkpointing = True
    _supports_sdpa = True  # the LLM's attention; the Whisper window encoder builds an additive mask (eager / SDPA)
    _supports_attention_backend = True
    _no_split_modules = ["LlamaDecoderLayer", "WhisperEncoderLayer", "HubertEncoderLayer", "Wav2Vec2EncoderLayer"]

    def _init_weights(self, module):
        if isinstance(module, AudioFrontEnd):
            module.init_weights(getattr(self.config.text_config, "initializer_range", 0.02))


class AudioMiniChatForConditionalGeneration(AudioMiniChatPreTrainedModel, GenerationMixin):
    """Audio front end + causal LLM. ``forward`` returns the LLM's output (plus ``loss`` from ``labels``)."""

    _audio_input_names = AUDIO_INPUT_NAMES

    def __init__(self, config: AudioMiniChatConfig):
        super().__init__(config)
        self.audio_frontend = frontend_class(config.audio_frontend)(config)
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        self.audio_gate = AudioGate()
        self.audio_lora = None
        if config.audio_lora:
            self.add_audio_lora(config.audio_lora)
        self.post_init()

    def add_audio_lora(self, spec: dict) -> AudioLoRA:
        """(Re)build the LLM adapter that is active only for prompts with audio (``config.audio_lora``) around the
        current LLM; a fresh adapter changes nothing until trained."""
        self.audio_lora = AudioLoRA(self.language_model, spec, self.audio_gate)
        self.config.audio_lora = dict(spec)
        return self.audio_lora

    def _audio_rows(self, input_ids) -> torch.Tensor | None:
        """Which rows hold audio placeholders (the audio adapter's rows); None without an adapter or ids."""
        if self.audio_lora is None or input_ids is None:
            return None
        return (input_ids == self.config.audio_token_id).any(-1)

    # ---- parts (for generate / resizing / peft / training) -----------------------------------------
    @property
    def audio_encoder(self) -> torch.nn.Module:
        return self.audio_frontend.encoder

    @property
    def projector(self) -> torch.nn.Module:
        return self.audio_frontend.projector

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value):
        self.language_model.set_output_embeddings(value)

    # ---- audio ------------------------------------------------------------------------------------
    def _audio_inputs(self, input_features, input_features_mask, input_values, input_values_mask):
        """The processor's encoder windows and their mask: ``input_features`` (mel features) or, for encoders that
        read the waveform, ``input_values`` (``config.feature_kind``); ``(None, None)`` without audio."""
        name, other = ("input_features", "input_values") if self.config.feature_kind == "mel" else ("input_values", "input_features")
        given = {"input_features": (input_features, input_features_mask), "input_values": (input_values, input_values_mask)}
        if given[other][0] is not None:
            raise ValueError(f"This model's encoder ({self.config.audio_config.model_type}) reads {name}, not {other}: build "
                             "inputs with the processor of this model.")
        return given[name]

    def get_audio_features(self, input_features=None, input_features_mask=None, audio_window_clip=None, audio_spans=None,
                           input_values=None, input_values_mask=None) -> AudioFrontEndOutput:
        """The front end's output: per clip as many embeddings as the clip has placeholders, and which hold audio."""
        audio, mask = self._audio_inputs(input_features, input_features_mask, input_values, input_values_mask)
        if audio is None or mask is None or audio_window_clip is None:
            raise ValueError("Audio inputs need their mask and audio_window_clip (use AudioMiniChatProcessor).")
        return self.audio_frontend(audio, mask, audio_window_clip, audio_spans, token_table=self.get_input_embeddings().weight)

    def embed_inputs(self, input_ids, input_features=None, input_features_mask=None, audio_window_clip=None, audio_spans=None,
                     attention_mask=None, input_values=None, input_values_mask=None,
                     ) -> tuple[torch.Tensor, torch.Tensor | None, AudioFrontEndOutput | None]:
        """Token embeddings with each run of audio placeholders replaced by its clip's embeddings.

        Returns ``(inputs_embeds, attention_mask, audio)``: the mask is the given one with the slots the front end
        left unfilled masked out (their positions are then skipped by the position ids too, so the LLM sees exactly
        the filled embeddings); ``audio`` is the front end's output (None without audio).
        """
        audio = None
        if input_features is not None or input_values is not None:
            audio = self.get_audio_features(input_features, input_features_mask, audio_window_clip, audio_spans,
                                            input_values, input_values_mask)
        return self._place_audio(input_ids, attention_mask, audio)

    def _embed_encoder_states(self, input_ids, attention_mask, encoder_states, encoder_state_lengths, audio_num_samples):
        """For training from cached encoder states (``training/feature_cache.py``): :meth:`embed_inputs` with the
        front end's stage 1 computed once and stored: ``encoder_states`` (clips, steps, dim) with
        ``encoder_state_lengths`` and ``audio_num_samples`` (clips,); only the trainable stage 2 runs here."""
        per_clip = [encoder_states[i, : int(n)] for i, n in enumerate(encoder_state_lengths.tolist())]
        audio = self.audio_frontend.embed_encoder_states(per_clip, [int(n) for n in audio_num_samples.tolist()])
        return self._place_audio(input_ids, attention_mask, audio)

    def _place_audio(self, input_ids, attention_mask, audio: AudioFrontEndOutput | None):
        """The prompt's token embeddings with the placeholders holding ``audio``'s embeddings (see embed_inputs)."""
        placeholder = input_ids == self.config.audio_token_id
        embeds = self.get_input_embeddings()(input_ids.masked_fill(placeholder, 0))
        n_placeholders = int(placeholder.sum())
        if audio is None:
            if n_placeholders:
                raise ValueError(f"input_ids hold {n_placeholders} audio placeholder tokens but no audio features were given.")
            return embeds, attention_mask, None
        values, filled = torch.cat(audio.embeddings), torch.cat(audio.fill_mask)
        if values.shape[0] != n_placeholders:
            raise ValueError(
                f"The prompt holds {n_placeholders} audio placeholder tokens but the audio yields {values.shape[0]} "
                "embeddings; build inputs with the processor of this model (same audio layout)."
            )
        embeds = embeds.masked_scatter(placeholder.unsqueeze(-1), values.to(embeds.dtype))
        if not bool(filled.all()):
            unused = torch.zeros_like(placeholder)
            unused[placeholder] = ~filled
            attention_mask = (torch.ones_like(input_ids) if attention_mask is None else attention_mask).masked_fill(unused, 0)
        return embeds, attention_mask, audio

    # ---- forward / generate -------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        input_features: torch.Tensor | None = None,
        input_features_mask: torch.Tensor | None = None,
        audio_window_clip: torch.Tensor | None = None,
        audio_spans: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        output_audio_embeddings: bool = False,
        input_values: torch.Tensor | None = None,
        input_values_mask: torch.Tensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ):
        """The LLM's output on the prompt with audio embedded; ``output_audio_embeddings=True`` adds each clip's
        filled audio embeddings (``audio_embeddings``, clip order) and ASR tokens where the front end reads them.
        Audio comes as the processor gives it: ``input_features`` (mel) or ``input_values`` (waveform encoders).
        ``logits_to_keep``: the LLM's (0: every position); named here so that ``generate`` asks for the last
        position's logits only (the prompt's other positions' logits are never read)."""
        audio = dict(input_features=input_features, input_features_mask=input_features_mask, input_values=input_values,
                     input_values_mask=input_values_mask, audio_window_clip=audio_window_clip, audio_spans=audio_spans)
        with self.audio_gate.open(self._audio_rows(input_ids)):
            return self._forward(input_ids, attention_mask, audio, inputs_embeds, labels, output_audio_embeddings,
                                 logits_to_keep=logits_to_keep, **kwargs)

    def _forward(self, input_ids, attention_mask, audio_inputs: dict, inputs_embeds, labels, output_audio_embeddings, **kwargs):
        audio = None
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("Pass input_ids (from AudioMiniChatProcessor) or inputs_embeds.")
            inputs_embeds, attention_mask, audio = self.embed_inputs(input_ids, attention_mask=attention_mask, **audio_inputs)
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        context = getattr(self.config.text_config, "max_position_embeddings", None)
        if context is not None and attention_mask is not None and attention_mask.shape[-1] > context:
            raise ValueError(f"The sequence is {attention_mask.shape[-1]} tokens long but the LLM's context is {context} tokens.")
        if attention_mask is not None and kwargs.get("position_ids") is None and attention_mask.ndim == 2:
            # Positions count real tokens only, so a left-padded row sees the same positions as alone.
            positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
            kwargs["position_ids"] = positions[:, -inputs_embeds.shape[1] :]
        outputs = self.language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs)
        if labels is not None:
            outputs.loss = self.loss_function(
                logits=outputs.logits, labels=labels, vocab_size=self.config.text_config.vocab_size,
                num_items_in_batch=num_items_in_batch,
            )
        if output_audio_embeddings:
            clips = () if audio is None else audio.filled_embeddings()
            outputs = AudioMiniChatOutput(**{**outputs, "loss": outputs.loss}, audio_embeddings=clips,
                                          audio_token_ids=None if audio is None else audio.token_ids)
        return outputs

    def prompt_for_generation(self, input_ids, attention_mask=None, **audio_inputs) -> tuple[dict, AudioFrontEndOutput | None]:
        """What :meth:`generate` starts from: ``{"input_ids", "attention_mask"}`` plus, for a prompt with audio (the
        processor's ``AUDIO_INPUT_NAMES``), its ``inputs_embeds`` (the audio embedded once, unfilled slots masked
        out); and the front end's output (None without audio: e.g. the ASR tokens it read)."""
        if audio_inputs.get("input_features") is None and audio_inputs.get("input_values") is None:
            return {"input_ids": input_ids, "attention_mask": attention_mask}, None
        inputs_embeds, attention_mask, audio = self.embed_inputs(input_ids, attention_mask=attention_mask, **audio_inputs)
        return {"input_ids": input_ids, "inputs_embeds": inputs_embeds, "attention_mask": attention_mask}, audio

    def generate(self, input_ids=None, attention_mask=None, input_features=None, input_features_mask=None,
                 audio_window_clip=None, audio_spans=None, input_values=None, input_values_mask=None, **kwargs):
        """``GenerationMixin.generate`` on prompts with audio: the prompt is embedded here, once
        (:meth:`prompt_for_generation`), and generation keeps the attention mask that hides unfilled audio slots.

        ``answer_no_repeat_ngram_size`` (a call argument or a field of the generation config): no n-gram repeats
        within the answer itself. Unlike ``no_repeat_ngram_size`` it leaves the prompt out, so an answer may still
        quote what it was given (a summary reusing the speaker's phrases, "repeat this")."""
        size = kwargs.pop("answer_no_repeat_ngram_size", getattr(self.generation_config, "answer_no_repeat_ngram_size", None))
        if size and input_ids is not None:
            kwargs["logits_processor"] = LogitsProcessorList(
                [*kwargs.get("logits_processor", []), AnswerNoRepeatNGram(int(size), input_ids.shape[1])])
        # the audio adapter (if any) stays on for the rows whose prompt holds audio, for every step of the answer
        with self.audio_gate.open(self._audio_rows(input_ids)):
            prompt, _ = self.prompt_for_generation(
                input_ids, attention_mask, input_features=input_features, input_features_mask=input_features_mask,
                input_values=input_values, input_values_mask=input_values_mask, audio_window_clip=audio_window_clip,
                audio_spans=audio_spans)
            return super().generate(**prompt, **kwargs)

    def prepare_inputs_for_generation(self, *args, inputs_embeds=None, is_first_iteration: bool | None = False, **kwargs):
        """Audio goes in with the prompt only (``inputs_embeds``, embedded once by :meth:`generate`)."""
        for name in self._audio_input_names:
            kwargs.pop(name, None)
        return super().prepare_inputs_for_generation(*args, inputs_embeds=inputs_embeds, is_first_iteration=is_first_iteration, **kwargs)

    # ---- the cascade's ASR model -------------------------------------------------------------------
    def asr_model(self):
        """This checkpoint's encoder and ASR decoder as a full ASR model (Whisper: ``WhisperForConditionalGeneration``),
        sharing their weights (nothing is copied or loaded again), with the ASR model's own generation config."""
        frontend = self.audio_frontend
        if getattr(frontend, "asr_decoder", None) is None or not self.config.asr_generation_config:
            raise ValueError(
                "This checkpoint holds no ASR decoder and generation config for the cascade "
                "(build it with keep_asr_decoder=True from an encoder-decoder ASR model such as Whisper)."
            )
        from transformers import GenerationConfig

        with torch.device("meta"):
            asr = ASR_MODEL_CLASSES[self.config.audio_config.model_type](self.config.audio_config)
        asr.model.encoder, asr.model.decoder = frontend.encoder, frontend.asr_decoder
        asr.proj_out.weight = frontend.asr_decoder.embed_tokens.weight  # Whisper ties its output head to the embeddings
        asr.generation_config = GenerationConfig.from_dict(self.config.asr_generation_config)
        return asr.eval()

    # ---- construction from pretrained parts ----------------------------------------------------------
    @classmethod
    def from_components(cls, language_model: PreTrainedModel, audio_encoder: PreTrainedModel, audio_token_id: int,
                        **config_kwargs) -> "AudioMiniChatForConditionalGeneration":
        """Assemble a model around an existing LLM and ASR model / encoder (their weights are kept, not copied).

        ``audio_encoder`` may be a full ASR model (e.g. ``WhisperForConditionalGeneration`` or ``HubertForCTC``):
        the front end takes the parts it reads. The projector is freshly initialised.
        """
        config_kwargs = upgrade_legacy_keys(config_kwargs)
        options = frontend_config_class(config_kwargs.get("audio_frontend") or DEFAULT_FRONTEND)
        config_kwargs["frontend_config"] = {**options.from_asr_model(audio_encoder), **(config_kwargs.get("frontend_config") or {})}
        if getattr(audio_encoder, "generation_config", None) is not None and hasattr(audio_encoder, "get_decoder"):
            config_kwargs.setdefault("asr_generation_config", audio_encoder.generation_config.to_dict())
        encoder = audio_encoder.get_encoder() if hasattr(audio_encoder, "get_encoder") else getattr(audio_encoder, "base_model", audio_encoder)
        config = AudioMiniChatConfig(audio_config=encoder.config.to_dict(), text_config=language_model.config.to_dict(),
                                     audio_token_id=audio_token_id, **config_kwargs)
        with torch.device("meta"):
            model = cls(config)
        model.audio_frontend.adopt(audio_encoder)
        model.audio_frontend.projector.to_empty(device=language_model.device)  # the one fresh part
        model.audio_frontend.init_weights(getattr(config.text_config, "initializer_range", 0.02))
        model.language_model = language_model
        if config.audio_lora:  # around the real LLM (the one built above was on the meta device)
            model.add_audio_lora(config.audio_lora).to(device=language_model.device, dtype=language_model.dtype)
        model.generation_config = language_model.generation_config
        return model

    def save_pretrained(self, save_directory, *args, **kwargs):
        # Name the pipeline (its file is copied below) so that `pipeline(model=dir, trust_remote_code=True)` finds it.
        self.config.custom_pipelines = {
            PIPELINE_TASK: {"impl": "pipeline_audio_minichat.AudioMiniChatPipeline", "pt": ["AutoModel"], "tf": [], "type": "multimodal"}
        }
        out = super().save_pretrained(save_directory, *args, **kwargs)
        here = Path(__file__).resolve().parent
        for name in EXTRA_REMOTE_CODE:
            if (here / name).is_file():
                shutil.copyfile(here / name, Path(save_directory) / name)
        return out


AudioMiniChatConfig.register_for_auto_class()
AudioMiniChatForConditionalGeneration.register_for_auto_class("AutoModel")

__all__ = ["AudioMiniChatForConditionalGeneration", "AudioMiniChatOutput", "AudioMiniChatPreTrainedModel"]
