"""The command line starts at once: ``--help``, ``--version``, each command's ``--help`` and argument errors import
neither torch nor transformers (each command imports what it uses when it runs), and ``import audio_minichat``
alone imports neither until a name is used (issue 26, item 2).

What is asserted is the set of modules the process imported (``python -X importtime``), not a wall time: the
whole-process time was measured from outside (0.4 s median on 2 busy cores, against 10.8 s before).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

HEAVY = ("torch", "transformers")


def imported_by(args: list[str], code: str | None = None) -> tuple[set[str], subprocess.CompletedProcess]:
    """The top-level packages a fresh ``python -X importtime`` process imports (``-m audio_minichat.app.cli ARGS``,
    or ``-c CODE``), and the finished process (its own stderr without the import-time lines)."""
    command = [sys.executable, "-X", "importtime", *(["-c", code] if code else ["-m", "audio_minichat.app.cli", *args])]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT.parent, env=env)
    modules, other = set(), []
    for line in run.stderr.splitlines():
        if line.startswith("import time:"):
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":  # the header line
                modules.add(name.split(".")[0])
        else:
            other.append(line)
    run.stderr = "\n".join(other)
    return modules, run


@pytest.mark.parametrize("args", [["--help"], ["summarize", "--help"], ["ask", "--help"], ["transcribe", "--help"],
                                  ["build-default", "--help"], ["serve", "--help"], ["build", "--help"]])
def test_help_imports_neither_torch_nor_transformers(args):
    modules, run = imported_by(args)
    assert run.returncode == 0, run.stderr
    assert "audio_minichat" in modules and run.stdout.startswith("usage: audio-minichat")
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))


def test_version_imports_neither_torch_nor_transformers():
    from audio_minichat.app.cli import package_version

    modules, run = imported_by(["--version"])
    assert (run.returncode, run.stdout) == (0, f"audio-minichat {package_version()}\n")
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))


@pytest.mark.parametrize("args, message", [
    (["summarize", "--mode", "bogus", "talk.wav"],
     "error: audio-minichat summarize: argument --mode: invalid choice: 'bogus' (choose from 'e2e', 'cascade', 'text')"),
    (["summarize"], "error: summarize: AUDIO is required (an audio file or a folder of them)"),
    (["ask", "talk.wav"], "error: audio-minichat ask: the following arguments are required: --prompt"),
    (["transcribe", "no-such-file.wav"], "error: audio file 'no-such-file.wav' does not exist"),
    (["summarize", "x.wav", "--max-new-tokens", "0"], "error: --max-new-tokens must be >= 1"),
    (["frobnicate"], "error: audio-minichat: argument COMMAND: invalid choice: 'frobnicate' (choose from 'summarize', "
                     "'ask', 'transcribe', 'build-default', 'serve'"),  # (then any commands added since)
])
def test_argument_errors_import_neither_torch_nor_transformers(args, message):
    """One line on stderr (the message, or for an unknown command its start), exit status 2, no torch."""
    modules, run = imported_by(args)
    assert (run.returncode, run.stdout, run.stderr.count("\n")) == (2, "", 0), run.stderr
    assert run.stderr == message or (args == ["frobnicate"] and run.stderr.startswith(message)), run.stderr
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))


def test_plain_import_is_light_and_names_load_and_register_on_use():
    light, run = imported_by([], code="import audio_minichat; print(audio_minichat.__version__)")
    assert (run.returncode, run.stdout) == (0, "0.1.0\n") and not light & set(HEAVY)
    used, run = imported_by([], code=(
        "import audio_minichat\n"
        "from audio_minichat import AudioMiniChatConfig\n"
        "from transformers import AutoConfig, AutoModel\n"
        "from transformers.models.auto.processing_auto import PROCESSOR_MAPPING\n"
        "from transformers.pipelines import PIPELINE_REGISTRY\n"
        "print(type(AutoConfig.for_model('audio_minichat')).__name__, AutoModel._model_mapping[AudioMiniChatConfig].__name__,"
        " PROCESSOR_MAPPING[AudioMiniChatConfig].__name__, 'audio-minichat' in PIPELINE_REGISTRY.get_supported_tasks())"))
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["AudioMiniChatConfig", "AudioMiniChatForConditionalGeneration", "AudioMiniChatProcessor",
                                  "True"]
    assert set(HEAVY) <= used


def test_import_after_transformers_registers_at_once():
    """Where transformers is imported first, ``import audio_minichat`` registers the Auto classes as it always did."""
    _, run = imported_by([], code=(
        "from transformers import AutoConfig\n"
        "import audio_minichat\n"
        "print(type(AutoConfig.for_model('audio_minichat')).__name__)"))
    assert (run.returncode, run.stdout) == (0, "AudioMiniChatConfig\n"), run.stderr


def test_cli_choices_agree_with_their_owners():
    """The command line's light copies (app/choices.py) of the modes, default prompt and build variants."""
    from audio_minichat.app import choices
    from audio_minichat.assets.default_build import VARIANTS
    from audio_minichat.inference import speech_llm

    assert choices.MODES == speech_llm.MODES
    assert choices.DEFAULT_MODE == speech_llm.DEFAULT_MODE
    assert choices.DEFAULT_SUMMARY_PROMPT == speech_llm.DEFAULT_SUMMARY_PROMPT
    assert sorted(choices.BUILD_VARIANTS) == sorted(VARIANTS)
    from audio_minichat.assets.build_any import FRONTENDS

    assert choices.BUILD_FRONTENDS == tuple(FRONTENDS)
    from audio_minichat.inference import gguf_llm

    assert choices.LLM_BACKENDS == gguf_llm.LLM_BACKENDS
