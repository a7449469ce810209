"""Processor of AudioMiniChat: audio loading, feature extraction and chat prompts with audio placeholders.

One place decides each thing:
- the prompt format is :meth:`AudioMiniChatProcessor.apply_chat_template` (ProcessorMixin's, rendering the
  tokenizer's chat template, or a MiniChat-style template the processor supplies when the tokenizer has none,
  after each message's content parts are flattened: text parts and one ``<|audio|>`` per audio part, joined
  with newlines); :meth:`AudioMiniChatProcessor.build_prompt` is a thin layer over it;
- the number of ``<|audio|>`` tokens a clip gets is the front end's ``num_embeddings`` over the ``AudioLayout``
  (``frontend_<name>_config.py``, read through the configuration module);
- the text version of an audio prompt (the distillation teacher's input) is the same prompt with each
  placeholder replaced by its transcript (:meth:`AudioMiniChatProcessor.build_prompt` with ``transcripts``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from transformers import BatchFeature, ProcessorMixin

from .configuration_audio_minichat import DEFAULT_AUDIO_TOKEN, read_audio_layout
from .processor_kwargs import standard_call_kwargs
from .audio_io import AUDIO_FILE_HINT, AudioInputError, AudioTruncatedWarning, load_audio  # noqa: F401 (re-exported)
from .audio_spans import span_frames
from .prompt_parts import audio_with_text, fill_placeholders, render_content

# MiniChat-3B's format: "<s> [|User|] {prompt} </s>[|Assistant|] {response}</s>"; given to tokenizers with no template.
MINICHAT_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n"
    "{% elif message['role'] == 'user' %}[|User|] {{ message['content'] }}</s>"
    "{% else %}[|Assistant|] {{ message['content'] }}</s>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}[|Assistant|]{% endif %}"
)

ASR_TOKENIZER_DIR = "asr_tokenizer"  # subfolder of a checkpoint holding the cascade's ASR tokenizer


# Keys of an ``{"type": "audio"}`` content part that hold its audio, in the order they are read (transformers').
AUDIO_PART_KEYS = ("audio", "url", "path")


def _local_path(source: str, where: str, key: str) -> str:
    """``source`` as a local file path: ``file://`` URLs are accepted, remote URLs are refused (no network)."""
    if "://" not in source:
        return source
    from urllib.parse import unquote, urlparse

    parsed = urlparse(source)
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
        return unquote(parsed.path)
    raise AudioInputError(
        f"{where}: {key} {source!r} is not a local file; AudioMiniChatProcessor reads local audio only (no network): "
        "download it and give its path."
    )


class _FlattenedConversations(list):
    """Conversations as the chat template sees them (each message's content flattened to a string), with
    ``audio_parts``: per conversation, its audio parts in order as ``(where, part)``."""

    def __init__(self):
        super().__init__()
        self.audio_parts: list[list[tuple[str, dict]]] = []


class AudioMiniChatProcessor(ProcessorMixin):
    r"""Feature extractor + tokenizer for AudioMiniChat.

    Args:
        feature_extractor: ``WhisperFeatureExtractor`` (mel encoders) or ``Wav2Vec2FeatureExtractor``.
        tokenizer: the LLM's tokenizer; the audio token is added to it if missing.
        chat_template: prompt template; defaults to the tokenizer's, or MiniChat's format if it has none.
        audio_token: the placeholder written where audio goes.
        audio_layout: ``AudioLayout.to_dict()`` of the model (``config.audio_layout()``: windows and frames).
        audio_frontend, frontend_config: the model's front end and its options (``config.audio_frontend``,
            ``config.frontend_config``); with the layout they decide how
            many placeholder tokens each clip gets.
        max_context_length: the LLM's context length; longer prompts raise a clear error.
    """

    def __init__(
        self,
        feature_extractor=None,
        tokenizer=None,
        chat_template=None,
        audio_token: str = DEFAULT_AUDIO_TOKEN,
        audio_layout: dict | None = None,
        max_context_length: int | None = None,
        audio_frontend: str | None = None,
        frontend_config: dict | None = None,
    ):
        if tokenizer is None or feature_extractor is None:
            raise ValueError("AudioMiniChatProcessor needs both a feature_extractor and a tokenizer.")
        if audio_layout is None:
            raise ValueError("AudioMiniChatProcessor needs audio_layout (config.audio_layout().to_dict()).")
        if audio_token not in tokenizer.get_vocab():
            tokenizer.add_tokens([audio_token], special_tokens=True)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.audio_token = audio_token
        self.audio_token_id = tokenizer.convert_tokens_to_ids(audio_token)
        # an old processor_config.json holds the front end and its options inside audio_layout: read_audio_layout
        self.layout, self.frontend = read_audio_layout(audio_layout, audio_frontend, frontend_config)
        self.audio_layout = self.layout.to_dict()
        self.audio_frontend, self.frontend_config = self.frontend.name, self.frontend.to_dict()
        self.max_context_length = max_context_length
        # The cascade's ASR tokenizer (Whisper's), when the checkpoint transcribes; saved in ASR_TOKENIZER_DIR. Not an
        # __init__ argument: ProcessorMixin would make it a required attribute of every processor.
        self.asr_tokenizer = None
        if chat_template is None:
            chat_template = getattr(tokenizer, "chat_template", None) or MINICHAT_CHAT_TEMPLATE
        super().__init__(feature_extractor, tokenizer, chat_template=chat_template)

    def save_pretrained(self, save_directory, *args, **kwargs):
        out = super().save_pretrained(save_directory, *args, **kwargs)
        if self.asr_tokenizer is not None:
            self.asr_tokenizer.save_pretrained(os.path.join(save_directory, ASR_TOKENIZER_DIR))
        return out

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        from transformers import AutoTokenizer

        processor = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        source = os.fspath(pretrained_model_name_or_path)
        if os.path.isdir(os.path.join(source, ASR_TOKENIZER_DIR)):
            processor.asr_tokenizer = AutoTokenizer.from_pretrained(os.path.join(source, ASR_TOKENIZER_DIR))
        elif not os.path.isdir(source):  # a hub id: the cascade's tokenizer is the repository's subfolder, if it has one
            hub = {k: kwargs[k] for k in ("cache_dir", "revision", "token", "local_files_only") if k in kwargs}
            try:
                processor.asr_tokenizer = AutoTokenizer.from_pretrained(source, subfolder=ASR_TOKENIZER_DIR, **hub)
            except (OSError, ValueError):
                processor.asr_tokenizer = None  # a checkpoint that does not transcribe has none
        return processor

    @classmethod
    def from_config(cls, config, feature_extractor, tokenizer, chat_template=None) -> "AudioMiniChatProcessor":
        """The processor that matches ``config`` (an ``AudioMiniChatConfig``): same audio layout and token."""
        return cls(
            feature_extractor,
            tokenizer,
            chat_template=chat_template,
            audio_token=config.audio_token,
            audio_layout=config.audio_layout().to_dict(),
            audio_frontend=config.audio_frontend,
            frontend_config=config.frontend_config,
            max_context_length=getattr(config.text_config, "max_position_embeddings", None),
        )

    # ------------------------------------------------------------------------------------------------
    # prompts
    # ------------------------------------------------------------------------------------------------
    def build_prompt(
        self,
        content: str | list[dict],
        transcripts: Sequence[str] | None = None,
        system: str | None = None,
    ) -> str:
        """Render a prompt (with the generation prompt) by :meth:`apply_chat_template`.

        ``content`` is the user turn (a string that may contain ``<|audio|>`` placeholders, or a list of
        ``{"type": "text"|"audio"}`` parts) or a whole list of chat messages. With ``transcripts`` each
        placeholder is replaced, in order, by its transcript: the text version of the same prompt, for
        the distillation teacher and the ``text`` mode.
        """
        if isinstance(content, str) or (content and isinstance(content[0], dict) and "role" not in content[0]):
            messages = [{"role": "user", "content": content}]
        else:
            messages = list(content)
        if system is not None and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": system})
        prompt = self.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if transcripts is not None:
            prompt = self.fill_placeholders(prompt, transcripts)
        return prompt

    @staticmethod
    def audio_with_text(prompt: str | None, text_position: str = "before") -> list[dict]:
        """User-turn parts for one clip with an optional text ``prompt`` before or after it (prompt_parts.py)."""
        return audio_with_text(prompt, text_position)

    def _flatten_content(self, content, where: str = "message") -> str:
        return self.render_content(content, self.audio_token, where)

    @staticmethod
    def render_content(content, audio_token: str = DEFAULT_AUDIO_TOKEN, where: str = "message") -> str:
        """The string the chat template sees for a message's content (prompt_parts.render_content)."""
        return render_content(content, audio_token, where)

    # ---- ProcessorMixin.apply_chat_template hooks ----------------------------------------------------
    # ProcessorMixin.apply_chat_template normalizes the conversations, collects their audio (tokenize=True),
    # renders the template and calls ``self(text=prompts, audio=clips, sampling_rate=...)``. Its hooks are
    # used as follows: `_normalize_conversations` flattens each message's parts to the string the template
    # renders (keeping the audio parts aside), `_multimodal_inputs_from_conversations` loads those parts with
    # this module's `load_audio` (local files and arrays only; no network, no librosa), and
    # `_resolve_audio_loading_params` makes the rate handed to `__call__` the model's.
    def _normalize_conversations(self, conversation) -> tuple[list, bool]:
        conversations, is_batched = super()._normalize_conversations(conversation)
        flattened = _FlattenedConversations()
        for c, chat in enumerate(conversations):
            audio_parts, messages = [], []
            for m, message in enumerate(chat):
                where = (f"conversation {c}, " if is_batched else "") + f"message {m} ({message.get('role', '?')})"
                content = message.get("content")
                if isinstance(content, (list, tuple)):
                    audio_parts.extend(
                        (f"{where}, content part {p}", part)
                        for p, part in enumerate(content)
                        if isinstance(part, dict) and part.get("type") == "audio"
                    )
                    message = {**message, "content": self._flatten_content(content, where)}
                messages.append(message)
            flattened.append(messages)
            flattened.audio_parts.append(audio_parts)
        return flattened, is_batched

    def _resolve_audio_loading_params(self, processor_kwargs: dict) -> dict:
        # Clips are loaded at the model's rate, and that is the rate `__call__` is told. A `sampling_rate` the
        # caller gives (processor_kwargs) is the rate of audio arrays whose part names none (as in transformers,
        # where arrays are taken to be at that rate); without one they are taken to be at the model's rate.
        audio_kwargs = processor_kwargs.get("audio_kwargs") or {}
        declared = processor_kwargs.get("sampling_rate", audio_kwargs.get("sampling_rate"))
        rate = self.layout.sampling_rate
        return {"sampling_rate": rate, "array_sampling_rate": declared or rate}

    def _multimodal_inputs_from_conversations(
        self, conversations: list, audio_loading_params: dict, load_audio_from_video: bool = False
    ):
        if load_audio_from_video:
            raise ValueError("AudioMiniChatProcessor takes no video: load_audio_from_video=True is not supported.")
        if not isinstance(conversations, _FlattenedConversations):
            conversations, _ = self._normalize_conversations(list(conversations))
        array_rate = audio_loading_params.get("array_sampling_rate", self.layout.sampling_rate)
        clips = [
            self._load_audio_part(part, where, array_rate)
            for parts in conversations.audio_parts
            for where, part in parts
        ]
        no_images, no_videos = [[] for _ in conversations], [[] for _ in conversations]
        return no_images, no_videos, clips, {}

    def _load_audio_part(self, part: dict, where: str, array_rate: int) -> np.ndarray:
        """The clip of one ``{"type": "audio", ...}`` part, at the model's sampling rate."""
        key = next((k for k in AUDIO_PART_KEYS if part.get(k) is not None), None)
        if key is None:
            raise AudioInputError(
                f"{where}: the audio part has no audio; give it under 'path' (a local file), 'audio' (an array, "
                f"with 'sampling_rate', or a path) or 'url' (a local path). Its keys: {sorted(part)}."
            )
        source = part[key]
        if isinstance(source, str):
            source = _local_path(source, where, key)
        return load_audio(source, part.get("sampling_rate", array_rate), self.layout.sampling_rate, name=where)

    def fill_placeholders(self, prompt: str, transcripts: Sequence[str]) -> str:
        """Replace the audio placeholders of ``prompt``, in order, with ``transcripts`` (prompt_parts.py)."""
        return fill_placeholders(prompt, transcripts, self.audio_token)

    # ------------------------------------------------------------------------------------------------
    # audio
    # ------------------------------------------------------------------------------------------------
    def num_audio_tokens(self, num_samples: int, num_spans: int | None = None) -> int:
        """Placeholder tokens for a clip of ``num_samples`` samples (at the model's sampling rate)."""
        return self.frontend.num_embeddings(self.layout, num_samples, num_spans)

    def _features(self, clips: list[np.ndarray]) -> dict:
        """Encoder inputs for every window of every clip, padded to the longest window."""
        rate = self.layout.sampling_rate
        windows, owners = [], []
        for clip_index, clip in enumerate(clips):
            if clip.shape[0] < self.layout.min_samples:
                clip = np.pad(clip, (0, self.layout.min_samples - clip.shape[0]))
            for start, end in self.layout.split_windows(clip.shape[0]):
                windows.append(clip[start:end])
                owners.append(clip_index)
        feats = []
        # pad_windows: every window is padded to the full window, as the encoder's ASR decoder was trained
        padding = {"padding": "max_length", "max_length": self.layout.window_samples} if self.layout.pad_windows else {"padding": "longest"}
        for window in windows:
            out = self.feature_extractor(
                window, sampling_rate=rate, return_attention_mask=False, return_tensors="np", **padding
            )
            key = "input_features" if "input_features" in out else "input_values"
            array = out[key][0]
            expected = self.layout.feature_frames(window.shape[0])
            if array.shape[-1] != expected:
                raise RuntimeError(
                    f"Feature extractor gave {array.shape[-1]} frames for {window.shape[0]} samples; the layout expects {expected}."
                )
            feats.append(array)
        longest = max(f.shape[-1] for f in feats)
        padded = np.zeros((len(feats),) + feats[0].shape[:-1] + (longest,), dtype=np.float32)
        mask = np.zeros((len(feats), longest), dtype=np.int64)
        for i, (f, window) in enumerate(zip(feats, windows)):
            padded[i, ..., : f.shape[-1]] = f
            mask[i, : self.layout.audio_frames(window.shape[0])] = 1
        key = self.audio_input_name  # as transformers names them: mel features, or the waveform's samples
        return {
            key: torch.from_numpy(padded),
            f"{key}_mask": torch.from_numpy(mask),
            "audio_window_clip": torch.tensor(owners, dtype=torch.long),
        }

    @property
    def audio_input_name(self) -> str:
        """``input_features`` (mel features) or ``input_values`` (the raw waveform, for HuBERT / wav2vec2 encoders)."""
        return "input_features" if self.layout.feature_kind == "mel" else "input_values"

    # ------------------------------------------------------------------------------------------------
    # call
    # ------------------------------------------------------------------------------------------------
    def __call__(
        self,
        text: str | list[str] | None = None,
        audio=None,
        sampling_rate: int | None = None,
        audio_spans: list | None = None,
        responses: str | list[str] | None = None,
        padding_side: str | None = None,
        return_tensors: str = "pt",
        add_special_tokens: bool = False,
        audio_num_samples: list[int] | None = None,
        images=None,
        videos=None,
        **kwargs,
    ) -> BatchFeature:
        """Tokenize prompts (already rendered by :meth:`apply_chat_template` / :meth:`build_prompt`) and prepare
        their audio. ``apply_chat_template(..., tokenize=True)`` calls this with the rendered prompts and the
        clips of their audio parts.

        Args:
            text: prompt string(s), each with as many ``<|audio|>`` placeholders as it has clips.
            audio: the clips in placeholder order: a flat list for the whole batch (or one clip).
                Each is a path, an array/tensor (with ``sampling_rate``) or a ``datasets`` audio dict.
            sampling_rate: the arrays' rate in Hz, or a list of one rate per clip (each is resampled to the
                model's rate).
            audio_spans: for ``downsample="ctc_pool"``: per clip, a list of ``(start_s, end_s)`` spans
                in seconds (e.g. CTC word spans); each span becomes one embedding.
            responses: assistant responses for training; adds ``labels`` (-100 outside the response).
            padding_side: ``"left"`` (default, for generation) or ``"right"`` (default with responses).
            add_special_tokens: whether the tokenizer adds its special tokens to each prompt (the chat template
                writes them, so off by default).
            audio_num_samples: in place of ``audio``, each clip's sample count (at the model's rate): the prompts are
                tokenized with the same placeholder counts, and no features are computed (training from cached
                front-end features: the features come from the cache).
        """
        given = {"sampling_rate": sampling_rate, "padding_side": padding_side, "return_tensors": return_tensors,
                 "add_special_tokens": add_special_tokens}
        given = standard_call_kwargs(kwargs, given)
        sampling_rate, padding_side = given["sampling_rate"], given["padding_side"]
        return_tensors, add_special_tokens = given["return_tensors"], given["add_special_tokens"]
        if images is not None or videos is not None:
            raise ValueError("AudioMiniChatProcessor takes text and audio only, not images or videos.")
        if text is None:
            raise ValueError("AudioMiniChatProcessor needs `text`: prompt(s) built with build_prompt().")
        texts = [text] if isinstance(text, str) else list(text)
        if responses is not None:
            responses = [responses] if isinstance(responses, str) else list(responses)
            if len(responses) != len(texts):
                raise ValueError(f"Got {len(texts)} prompts but {len(responses)} responses.")
        if padding_side is None:
            padding_side = "right" if responses is not None else "left"
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}.")

        if audio is None:
            clips_in = []
        elif isinstance(audio, (list, tuple)) and not (audio and isinstance(audio[0], (int, float, np.number))):
            clips_in = list(audio)
        else:
            clips_in = [audio]
        if audio_num_samples is not None:
            if clips_in:
                raise ValueError("Pass audio or audio_num_samples, not both.")
            clips_in = [np.zeros(int(n), dtype=np.float32) for n in audio_num_samples]  # lengths only: never encoded
        counts = [t.count(self.audio_token) for t in texts]
        if sum(counts) != len(clips_in):
            detail = ", ".join(f"prompt {i}: {c}" for i, c in enumerate(counts))
            raise ValueError(
                f"The prompts contain {sum(counts)} {self.audio_token} placeholder(s) ({detail}) but {len(clips_in)} "
                f"audio clip(s) were given; pass one clip per placeholder, in order."
            )
        if isinstance(sampling_rate, (list, tuple, np.ndarray)):  # one rate per clip: each resampled from its own
            rates = list(sampling_rate)
            if len(rates) != len(clips_in):
                raise ValueError(f"sampling_rate is a list of {len(rates)} rates for {len(clips_in)} audio clip(s): "
                                 "give one rate for all clips, or one per clip, in order.")
        else:
            rates = [sampling_rate] * len(clips_in)
        clips = [
            load_audio(c, rates[i], self.layout.sampling_rate, name=f"audio clip {i}")
            if audio_num_samples is None else c for i, c in enumerate(clips_in)
        ]
        if audio_spans is not None and len(audio_spans) != len(clips):
            raise ValueError(f"Got {len(clips)} audio clips but spans for {len(audio_spans)}.")
        if self.frontend.needs_spans and clips and audio_spans is None:
            raise ValueError(f"This model pools over frame spans (audio_frontend={self.frontend.name!r}): pass audio_spans.")

        n_tokens = [
            self.num_audio_tokens(c.shape[0], len(audio_spans[i]) if audio_spans is not None else None)
            for i, c in enumerate(clips)
        ]
        sequences, label_masks, clip_iter = [], [], iter(n_tokens)
        for row, prompt in enumerate(texts):
            pieces = prompt.split(self.audio_token)
            expanded = pieces[0] + "".join(self.audio_token * next(clip_iter) + p for p in pieces[1:])
            ids = self.tokenizer(expanded, add_special_tokens=add_special_tokens)["input_ids"]
            is_response = [0] * len(ids)
            if responses is not None:
                resp_ids = self.tokenizer(self._response_suffix(responses[row]), add_special_tokens=False)["input_ids"]
                ids = ids + resp_ids
                is_response += [1] * len(resp_ids)
            if self.max_context_length is not None and len(ids) > self.max_context_length:
                raise ValueError(
                    f"Prompt {row} is {len(ids)} tokens long (audio included) but the LLM's context is "
                    f"{self.max_context_length} tokens; shorten the audio or the text."
                )
            sequences.append(ids)
            label_masks.append(is_response)

        longest = max(len(s) for s in sequences)
        pad_id = self.tokenizer.pad_token_id
        input_ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), longest), dtype=torch.long)
        labels = torch.full((len(sequences), longest), -100, dtype=torch.long)
        for i, (ids, resp) in enumerate(zip(sequences, label_masks)):
            sl = slice(longest - len(ids), longest) if padding_side == "left" else slice(0, len(ids))
            input_ids[i, sl] = torch.tensor(ids, dtype=torch.long)
            attention_mask[i, sl] = 1
            resp_t = torch.tensor(resp, dtype=torch.bool)
            labels[i, sl] = torch.where(resp_t, torch.tensor(ids, dtype=torch.long), torch.tensor(-100))
        data = {"input_ids": input_ids, "attention_mask": attention_mask}
        if responses is not None:
            data["labels"] = labels
        if clips and audio_num_samples is None:
            data.update(self._features(clips))
            if audio_spans is not None:
                data["audio_spans"] = span_frames(audio_spans, self.layout.samples_per_frame / self.layout.sampling_rate)
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _response_suffix(self, response: str) -> str:
        """What the chat template writes after the generation prompt for an assistant turn ``response``."""
        probe = [{"role": "user", "content": "x"}]
        with_gen = self.apply_chat_template(probe, add_generation_prompt=True, tokenize=False)
        full = self.apply_chat_template(
            probe + [{"role": "assistant", "content": response}], add_generation_prompt=False, tokenize=False
        )
        if not full.startswith(with_gen):
            raise ValueError("The chat template does not render a response as a continuation of the generation prompt.")
        # Whitespace the template writes after the end-of-turn marker is not part of the response.
        return full[len(with_gen) :].rstrip()

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)

    @property
    def model_input_names(self):
        return ["input_ids", "attention_mask", self.audio_input_name, f"{self.audio_input_name}_mask", "audio_window_clip", "audio_spans"]


AudioMiniChatProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["AudioMiniChatProcessor", "load_audio", "AudioInputError", "MINICHAT_CHAT_TEMPLATE"]
