"""Checks what `bash scripts/demo.sh` printed: on stdout the three mode headers in the demo's order, each
followed by an answer (a line of at least three words before the next header); on stderr (optional) no
traceback and no question a new user would have to answer (transformers' remote-code prompt). .ci/run calls it.

    python scripts/check_demo_output.py DEMO_STDOUT [DEMO_STDERR]
"""

from __future__ import annotations

import sys
from pathlib import Path

MODES = ("cascade", "e2e", "text")
# what must never reach a new user's terminal
STDERR_REFUSED = ("Traceback (most recent call last)", "Do you wish to run the custom code")


def answers(stdout: str) -> dict[str, str]:
    """{mode: its answer} from the demo's stdout; raises ValueError naming what is missing."""
    found: dict[str, list[str]] = {}
    current = None
    for line in stdout.splitlines():
        if line.startswith("== ") and line.rstrip().endswith(" =="):
            current = line[3:].split()[0].rstrip(",")
            if current in found:
                raise ValueError(f"the {current} header is printed twice")
            found[current] = []
        elif current is not None and line.strip():
            found[current].append(line.strip())
    if list(found) != list(MODES):
        raise ValueError(f"expected the headers {', '.join(MODES)} in that order; got {', '.join(found) or 'none'}")
    out = {mode: " ".join(lines) for mode, lines in found.items()}
    for mode, text in out.items():
        if len(text.split()) < 3:
            raise ValueError(f"the {mode} answer is missing or shorter than three words: {text!r}")
    return out


def check_stderr(stderr: str) -> None:
    """Raises ValueError naming the first line a new user should never see."""
    for line in stderr.splitlines():
        if any(bad in line for bad in STDERR_REFUSED):
            raise ValueError(f"stderr has {line.strip()!r}")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (1, 2):
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    try:
        got = answers(Path(argv[0]).read_text(encoding="utf-8", errors="replace"))
        if len(argv) == 2:
            check_stderr(Path(argv[1]).read_text(encoding="utf-8", errors="replace"))
    except (OSError, ValueError) as exc:
        print(f"check_demo_output: {exc}", file=sys.stderr)
        return 1
    print(f"check_demo_output: three answers ({', '.join(f'{m}: {len(t.split())} words' for m, t in got.items())})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
