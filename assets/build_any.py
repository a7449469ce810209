"""``audio-minichat build``: an AudioMiniChat checkpoint from any causal chat LLM and any Whisper, in one command.

The LLM (``--llm``) is a folder that ``AutoModelForCausalLM`` loads (with its tokenizer), a ``.gguf`` file (read by
transformers' GGUF loader and dequantised, as the offline default's LLM is), a hub id, or the offline name
``smollm2-135m-instruct``. The ASR model (``--asr``) is a transformers Whisper folder, a CTranslate2 Whisper folder
(``model.bin`` + ``config.json`` + ``tokenizer.json``, as faster-whisper uses; converted exactly, as the default's
Whisper is: ``assets/ct2_convert.py``), a hub id, or an offline name (``whisper-tiny.en``, ``whisper-base``).

What the result can do without training (:func:`routes`): the cascade (Whisper's transcript, then the LLM) and
text always; e2e through the ``asr_tokens`` front end too, since its token map comes from the two tokenizers;
the recognition-free front ends (``pool``, ``stack``, ``qformer``) need training first.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .default_build import DEFAULT_MODEL_KWARGS, QFORMER_KWARGS, assemble_model
from .offline import OFFLINE_ENCODERS, OFFLINE_LLMS, resolve_pretrained

# --frontend -> the AudioMiniChatConfig options of the build (the cascade needs Whisper's decoder in every one)
FRONTENDS: dict[str, dict] = {
    "asr_tokens": DEFAULT_MODEL_KWARGS,
    "pool": {"audio_frontend": "pool", "keep_asr_decoder": True},
    "stack": {"audio_frontend": "stack", "keep_asr_decoder": True},
    "qformer": QFORMER_KWARGS,
    "posterior": {"audio_frontend": "posterior", "keep_asr_decoder": True},
}
# The default's only trained tensor (assets/weights/default_projector.safetensors): the token mixture's temperature,
# exp(-0.5714) = 0.565; its state projection is zero there as in an untrained build.
DEFAULT_TRAINED_TEMPERATURE = 0.565
UNTRAINED_ASR_TOKENS_NOTE = (
    "untrained asr_tokens front end: Whisper's tokens reach the LLM as the LLM's own embeddings of their text (a "
    "token of one LLM piece as the mixture of Whisper's top-8 candidates at temperature 1.0, not the offline "
    f"default's trained {DEFAULT_TRAINED_TEMPERATURE}); e2e answers follow the speech but were not measured for "
    "this LLM"
)
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


class BuildError(ValueError):
    """A build input that cannot be used: one line naming it and what was expected."""


@dataclass
class Built:
    """A finished build: its folder and, per route, whether it runs untrained (``(True, how)``) or needs training."""

    out: Path
    frontend: str
    routes: dict[str, tuple[bool, str]] = field(default_factory=dict)


def _read_config(folder: Path, flag: str, spec: str) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise BuildError(f"{flag} {spec!r} is a folder without config.json: expected a model saved with save_pretrained"
                         + (", or a .gguf file" if flag == "--llm" else ", or a CTranslate2 Whisper folder (model.bin)"))
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BuildError(f"{flag} {spec!r}: {str(path)!r} is not readable JSON ({str(exc).splitlines()[0]})") from None


def _remote(flag: str, spec: str) -> str:
    """A spec that is no local path: an offline name or a hub id, else one line."""
    path = Path(spec).expanduser()
    if path.exists():
        raise BuildError(f"{flag} {spec!r} is neither a folder nor a .gguf file" if flag == "--llm"
                         else f"{flag} {spec!r} is not a folder: expected a Whisper folder (transformers or CTranslate2)")
    if spec.endswith(".gguf") or spec.startswith((".", "/", "~")) or not _HUB_ID.fullmatch(spec):
        raise BuildError(f"{flag} {spec!r} does not exist")
    return "hub"


def llm_kind(spec: str) -> str:
    """``"offline"``, ``"gguf"``, ``"folder"`` (a causal LM's, checked by its config) or ``"hub"``; a BuildError for
    anything else."""
    if spec in OFFLINE_LLMS:
        return "offline"
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return "gguf"
    if not path.is_dir():
        return _remote("--llm", spec)
    from transformers import AutoConfig, AutoModelForCausalLM

    model_type = _read_config(path, "--llm", spec).get("model_type")
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError) as exc:
        raise BuildError(f"--llm {spec!r}: transformers cannot read its config.json (model_type {model_type!r}): "
                         f"{str(exc).splitlines()[0]}") from None
    # (an encoder-decoder's decoder loads as a causal LM too, e.g. WhisperForCausalLM: not a chat LLM)
    if type(config) not in AutoModelForCausalLM._model_mapping or getattr(config, "is_encoder_decoder", False):
        raise BuildError(f"--llm {spec!r} is not a causal LM: its config.json has model_type {model_type!r} (expected "
                         f"one AutoModelForCausalLM loads, e.g. llama, qwen2, mistral, gemma)")
    return "folder"


def asr_kind(spec: str) -> str:
    """``"offline"``, ``"ct2"`` (a CTranslate2 Whisper folder), ``"folder"`` (a transformers Whisper) or ``"hub"``."""
    if spec in OFFLINE_ENCODERS:
        return "offline"
    path = Path(spec).expanduser()
    if not path.is_dir():
        return _remote("--asr", spec)
    if (path / "model.bin").is_file() and "model_type" not in _read_config(path, "--asr", spec):
        missing = [name for name in ("config.json", "tokenizer.json") if not (path / name).is_file()]
        if missing:
            raise BuildError(f"--asr {spec!r} is a CTranslate2 folder without {', '.join(missing)}")
        return "ct2"
    model_type = _read_config(path, "--asr", spec).get("model_type")
    if model_type != "whisper":
        raise BuildError(f"--asr {spec!r} is not a Whisper model: its config.json has model_type {model_type!r} "
                         f"(expected 'whisper', or a CTranslate2 Whisper folder with model.bin)")
    return "folder"


def _provenance_spec(spec: str, kind: str) -> str:
    """What config.provenance records: offline names and hub ids as given, a local file or folder by its name (never
    an absolute path)."""
    return spec if kind in ("offline", "hub") else Path(spec).expanduser().resolve().name


def load_llm(spec: str, kind: str, dtype: torch.dtype, cache_dir=None):
    """``(causal LM, tokenizer)``: a GGUF file dequantised into dense weights, else ``from_pretrained``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        if kind == "gguf":
            from transformers import GgufConfig

            path = Path(spec).expanduser().resolve()
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype, local_files_only=True,
                                                         quantization_config=GgufConfig(dequantize=True))
            model.hf_quantizer = None  # dense now: save_pretrained refuses a model that still names its GGUF quantizer
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
        else:
            source = resolve_pretrained(spec, cache_dir) if kind == "offline" else str(Path(spec).expanduser()) if kind == "folder" else spec
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
            tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise BuildError(f"--llm {spec!r}" + (" is no local file or folder, and as a hub id" if kind == "hub" else "")
                         + f" could not be loaded as a causal LM: {str(exc).splitlines()[0]}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    for name in ("bos", "eos", "pad"):
        if getattr(model.generation_config, f"{name}_token_id", None) is None:
            setattr(model.generation_config, f"{name}_token_id", getattr(tokenizer, f"{name}_token_id"))
    return model.eval(), tokenizer


def load_whisper(spec: str, kind: str, dtype: torch.dtype, cache_dir=None):
    """``(WhisperForConditionalGeneration, feature extractor, tokenizer)``."""
    from transformers import AutoFeatureExtractor, AutoModelForSpeechSeq2Seq, AutoTokenizer

    try:
        if kind == "ct2":
            from .ct2_whisper import convert_ct2_whisper

            model, processor = convert_ct2_whisper(Path(spec).expanduser(), dtype=dtype)
            return model.eval(), processor.feature_extractor, processor.tokenizer
        source = resolve_pretrained(spec, cache_dir) if kind == "offline" else str(Path(spec).expanduser()) if kind == "folder" else spec
        model = AutoModelForSpeechSeq2Seq.from_pretrained(source, dtype=dtype)
        return model.eval(), AutoFeatureExtractor.from_pretrained(source), AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise BuildError(f"--asr {spec!r}" + (" is no local folder, and as a hub id it" if kind == "hub" else "")
                         + f" could not be loaded as a Whisper model: {str(exc).splitlines()[0]}") from None


def check_out(out: Path, force: bool) -> None:
    """``--out``: a new or empty folder, or (with ``force``) an AudioMiniChat checkpoint to replace; never anything else."""
    if out.exists() and not out.is_dir():
        raise BuildError(f"--out {str(out)!r} is a file: give a folder for the checkpoint")
    if not out.is_dir() or not any(out.iterdir()):
        return
    config = out / "config.json"
    is_checkpoint = config.is_file() and json.loads(config.read_text(encoding="utf-8") or "{}").get("model_type") == "audio_minichat"
    if not is_checkpoint:
        raise BuildError(f"--out {str(out)!r} is a folder with other files in it, not an AudioMiniChat checkpoint: "
                         "choose a new or empty folder")
    if not force:
        raise BuildError(f"--out {str(out)!r} holds a checkpoint already: pass --force to replace it")


def routes(frontend: str) -> dict[str, tuple[bool, str]]:
    """Per route (``--mode``), whether a fresh build of ``frontend`` runs it untrained, and how."""
    e2e = (True, "asr_tokens: Whisper's decoding read as the LLM's own token embeddings (the mixture at "
                 f"temperature 1.0; the default's trained temperature is {DEFAULT_TRAINED_TEMPERATURE})")
    if frontend != "asr_tokens":
        what = "querying adapter and projector start" if frontend == "qformer" else "projector starts"
        e2e = (False, f"{frontend}: its {what} random; train first (docs/training.md), then --model the run's final/")
    return {"cascade": (True, "Whisper's transcript, then the LLM"), "e2e": e2e, "text": (True, "the LLM alone")}


def _with_options(kwargs: dict, options: dict | None) -> dict:
    """A build's config kwargs with ``options`` (config kwargs) laid over them, ``frontend_config`` merged key by key."""
    if not options:
        return kwargs
    merged = {**kwargs, **options}
    if "frontend_config" in options:
        merged["frontend_config"] = {**(kwargs.get("frontend_config") or {}), **options["frontend_config"]}
    return merged


def build_any(llm: str, asr: str, out_dir: str | os.PathLike, *, frontend: str = "asr_tokens",
              dtype: torch.dtype = torch.float32, force: bool = False, cache_dir=None,
              options: dict | None = None) -> Built:
    """Check the inputs (one-line :class:`BuildError` s), load the parts, assemble and write the checkpoint atomically.
    ``options``: AudioMiniChatConfig kwargs over the front end's own (``frontend_config`` merged option by option)."""
    if frontend not in FRONTENDS:
        raise BuildError(f"--frontend {frontend!r}: expected one of {', '.join(FRONTENDS)}")
    out = Path(out_dir).expanduser()
    check_out(out, force)
    kinds = llm_kind(llm), asr_kind(asr)
    language_model, tokenizer = load_llm(llm, kinds[0], dtype, cache_dir)
    whisper, feature_extractor, asr_tokenizer = load_whisper(asr, kinds[1], dtype, cache_dir)
    note = UNTRAINED_ASR_TOKENS_NOTE if frontend == "asr_tokens" else None
    assemble_model(language_model, tokenizer, whisper, feature_extractor, asr_tokenizer, out,
                   llm=_provenance_spec(llm, kinds[0]), encoder=_provenance_spec(asr, kinds[1]), dtype=dtype,
                   projector_note=note, **_with_options(FRONTENDS[frontend], options))
    return Built(out=out, frontend=frontend, routes=routes(frontend))


def format_routes(built: Built) -> str:
    """The lines ``audio-minichat build`` prints after the folder."""
    lines = [f"routes (audio-minichat summarize AUDIO --model {built.out} --mode MODE):"]
    for mode, (ready, how) in built.routes.items():
        lines.append(f"  {mode:<8} {'runs untrained' if ready else 'needs training'}: {how}")
    return "\n".join(lines)


__all__ = ["FRONTENDS", "BuildError", "Built", "build_any", "routes", "format_routes", "llm_kind", "asr_kind",
           "load_llm", "load_whisper", "check_out", "UNTRAINED_ASR_TOKENS_NOTE"]
