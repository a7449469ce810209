"""`audio-minichat serve`: the page's request streams the same answer summarize_long gives; gradio stays an optional
extra (one line and exit 2 without it; the other commands never import it); and in a real headless browser
(Debian's chromium + chromium-driver, selenium) the page, served in a subprocess on the real offline default, takes
an uploaded WAV and shows the answer, what the model heard, the chapters and the timings.

``AUDIO_MINICHAT_SERVE_SCREENSHOT=docs/serve.png python -m pytest tests/test_serve.py -m integration`` writes the
browser's screenshot of the answered page there (the README's picture).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
import soundfile as sf
import torch
from conftest import HIDE_MODULES, make_model, speechlike

from audio_minichat.app.cli import main
from audio_minichat.app.serve import SERVE_INSTALL_HINT, stream_answer
from audio_minichat.inference.longform import format_chapters, summarize_long
from audio_minichat.inference.speech_llm import DEFAULT_SUMMARY_PROMPT, SpeechLLM

ROOT = Path(__file__).resolve().parents[1]
SHORT_WAV = ROOT / "examples" / "short.wav"
SCREENSHOT = os.environ.get("AUDIO_MINICHAT_SERVE_SCREENSHOT")
# The browser test: the short example and a short answer (it checks the page, not the summary). The README's
# screenshot: the two-minute news example with the default prompt and the whole answer.
AUDIO, PROMPT, TOKENS = ((ROOT / "examples" / "news_2min.wav", DEFAULT_SUMMARY_PROMPT, 128) if SCREENSHOT else
                         (SHORT_WAV, "Summarize the following speech in one sentence:", 16))


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}


@pytest.fixture(scope="module")
def wordy_dir(tmp_path_factory):
    """A tiny random model that writes words: its special tokens' embeddings (tied to the output layer) are zero,
    so greedy decoding picks ordinary words and never stops early."""
    d = tmp_path_factory.mktemp("wordy")
    model, processor = make_model("whisper")
    with torch.no_grad():
        for i in processor.tokenizer.all_special_ids:
            model.get_input_embeddings().weight[i] = 0
    model.save_pretrained(d)
    processor.save_pretrained(d)
    sf.write(d / "clip.wav", speechlike(1.5), 16000)
    return d


@pytest.fixture(scope="module")
def wordy(wordy_dir):
    return SpeechLLM(wordy_dir, check_speech=False)


# ---- the page's request, without a browser --------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["e2e", "text"])
def test_stream_answer_streams_the_summarize_long_answer(wordy, wordy_dir, mode):
    audio, content = str(wordy_dir / "clip.wav"), "hello world, the time of day"
    kwargs = dict(audio=audio) if mode == "e2e" else dict(content=content)
    states = []  # (answer, status, done) as each state was yielded (the generator updates one PageState)
    for final in stream_answer(wordy, mode, prompt="summarize", chapters=True, max_new_tokens=6, **kwargs):
        states.append((final.answer, final.status, final.done))
    expected = summarize_long(wordy, mode, prompt="summarize", max_new_tokens=6, force_chapters=True, **kwargs)
    assert final.done and final.result is not None
    assert final.answer == expected.text and len(expected.text.split()) == 6
    assert "".join(final.pieces).strip() == expected.text and len(final.pieces) == 6  # one piece per token
    # the answer grows piece by piece while it is written: every streamed state shows a prefix of it
    partial = [a for a, status, done in states if status == "answering..."]
    assert len(partial) == 6 and all(expected.text.startswith(a) for a in partial) and partial[-1] == expected.text
    assert states[-1][2] and not any(done for _, _, done in states[:-1])
    assert final.chapters == format_chapters(expected.chapters)
    assert final.heard == ("" if mode == "text" else expected.transcript or "")
    timings = r"done: (audio 1\.5 s · )?(speech check [\d.]+ s · )?generate [\d.]+ s · total [\d.]+ s"
    assert re.fullmatch(r"(warning: .*\n)?" + timings, final.status), final.status


@pytest.mark.parametrize("chapters", [True, False])
def test_stream_answer_long_recording_progress_and_chapters(wordy, tmp_path, chapters):
    """A recording longer than a segment: the status reports each segment as it is done, the chapters (with
    chapters on) fill in one line per segment, the answer is summarize_long's combined answer."""
    long_wav = tmp_path / "long.wav"
    sf.write(long_wav, speechlike(3.0, seed=1), 16000)
    kwargs = dict(audio=str(long_wav), prompt="summarize", max_new_tokens=4, segment_seconds=1.0)
    states = []
    for final in stream_answer(wordy, "e2e", chapters=chapters, **kwargs):
        states.append((final.status, final.chapters))
    expected = summarize_long(wordy, "e2e", **kwargs)
    n = len(expected.chapters)  # segments of at most 1 s, cut in the quietest stretch: 3 or more
    assert n >= 3 and final.answer == expected.text and len(expected.text.split()) == 4
    progress = [(status, shown) for status, shown in states if status.startswith("segment ")]
    assert [status.split(" (")[0] for status, _ in progress] == [f"segment {i}/{n} done" for i in range(1, n + 1)]
    lines = format_chapters(expected.chapters).splitlines()
    assert [shown for _, shown in progress] == (["\n".join(lines[:i]) for i in range(1, n + 1)] if chapters else [""] * n)
    assert final.chapters == ("\n".join(lines) if chapters else "")
    assert len(lines) == n and lines[0].startswith("00:00-00:0") and lines[-1].endswith(expected.chapters[-1]["text"])


@pytest.mark.parametrize("mode,kwargs,message", [
    ("e2e", {}, "error: mode e2e needs audio: upload a file or record from the microphone"),
    ("cascade", {"audio": None}, "error: mode cascade needs audio"),
    ("text", {"content": "  "}, "error: text mode answers the text box: paste the text to answer"),
    ("loud", {}, "error: mode must be one of e2e, cascade, text, got 'loud'"),
])
def test_stream_answer_bad_request_is_one_status_line(wordy, mode, kwargs, message):
    states = list(stream_answer(wordy, mode, **kwargs))
    assert len(states) == 1 and states[0].done and states[0].result is None
    assert states[0].status.startswith(message) and "\n" not in states[0].status


def test_stream_answer_unreadable_audio_is_one_status_line(wordy, tmp_path):
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio at all")
    states = list(stream_answer(wordy, "e2e", audio=str(bad)))
    assert states[-1].done and states[-1].result is None and "\n" not in states[-1].status
    assert re.match(r"error: .*cannot read audio file '.*notes\.wav'", states[-1].status), states[-1].status


# ---- gradio is an optional extra -------------------------------------------------------------------------------
# Run in a fresh interpreter: the other commands, then serve with gradio made invisible (find_spec -> None), as in
# an install without the extra.
WITHOUT_GRADIO = textwrap.dedent("""
    import contextlib, io, json, os, sys
    from audio_minichat.app.cli import main

    for argv in (["--help"], ["serve", "--help"], ["summarize", "--help"], ["transcribe", "--help"],
                 ["summarize", "--mode", "text", "--text", "hello world", "--model", sys.argv[1],
                  "--max-new-tokens", "2", "--quiet"]):
        with contextlib.redirect_stdout(io.StringIO()) as out:
            try:
                code = main(argv)
            except SystemExit as exc:  # --help
                code = exc.code
        assert code in (0, None), (argv, code)
        if argv == ["serve", "--help"]:
            assert "--port" in out.getvalue() and 'audio-minichat[serve]' in out.getvalue(), out.getvalue()
    imported = sorted(m for m in sys.modules if m.partition(".")[0] == "gradio")

    os.environ["HIDE_MODULES"] = "gradio"  # from here on, as in an install without it (conftest.HIDE_MODULES)
    exec(__HIDE__)
    code = main(["serve", "--model", sys.argv[1], "--port", sys.argv[2]])
    print(json.dumps({"imported": imported, "serve": code}))
""").replace("__HIDE__", repr(HIDE_MODULES))


def test_gradio_is_optional(wordy_dir):
    """The parser (serve's options included), --help of every command and a summarize leave gradio unimported;
    serve without gradio is one line naming the extra, and exit 2."""
    done = subprocess.run([sys.executable, "-c", WITHOUT_GRADIO, str(wordy_dir), str(_free_port())], capture_output=True,
                          text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"imported": [], "serve": 2}
    assert done.stderr.strip().splitlines()[-1] == \
        f"error: serve needs gradio, which is not installed (gradio): {SERVE_INSTALL_HINT}"


@pytest.mark.parametrize("argv,message", [
    (["--port", "0"], "error: --port must be 1-65535, got 0"),
    (["--threads", "0"], "error: --threads must be >= 1"),
    (["--max-new-tokens", "0"], "error: --max-new-tokens must be >= 1"),
    (["--host", "no-such-host.invalid"], "error: --host 'no-such-host.invalid' is not an address of this machine"),
])
def test_serve_bad_options_one_line_exit_2(capsys, wordy_dir, argv, message):
    assert main(["serve", "--model", str(wordy_dir), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and len(err.splitlines()) == 1, err


def test_serve_on_a_taken_port_is_one_line_exit_2(capsys, wordy_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--model", str(wordy_dir), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: cannot serve on 127.0.0.1:{port} (Address already in use): choose another --port", err


# ---- the page in a real browser ----------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, server: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the server exited with {server.returncode}: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"the server did not answer {url} within {timeout} s: {log.read_text()[-3000:]}")


def _browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("no chromium / chromedriver: apt-get install chromium chromium-driver "
                    "(scripts/install_system_deps.sh installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    # every host name but this machine's resolves to nothing: the page is tested offline, its traffic stays local
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,1100",
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.fixture
def served(tmp_path):
    """`audio-minichat serve` on the real offline default, in a subprocess on a free port (preselected mode e2e);
    stopped with SIGINT (Ctrl-C) at the end, and killed if it does not stop."""
    from audio_minichat.assets.default_build import build_default

    build_default()  # built (or found) here, not inside the server's start-up
    port, log = _free_port(), tmp_path / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "-m", "audio_minichat.app.cli", "serve", "--port", str(port),
                                   "--threads", "1", "--max-new-tokens", str(TOKENS), "--mode", "e2e"],
                                  stdout=out, stderr=subprocess.STDOUT, env=_env(), cwd=tmp_path)
    try:
        yield server, f"http://127.0.0.1:{port}/", log
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=30)


@pytest.mark.integration
def test_page_in_a_browser_answers_an_uploaded_wav(served):
    """Upload examples/short.wav through the page's file input (for the screenshot: examples/news_2min.wav), choose
    cascade (the server preselects e2e), type a prompt, tick chapters, submit: the answer streams in and ends as
    exactly the answer summarize_long gives in this process (same model, mode, prompt, tokens and threads); what the
    model heard is Whisper's transcript; the chapters and timings are shown."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from audio_minichat.app.batch import set_threads
    from audio_minichat.assets.default_build import build_default

    server, url, log = served
    set_threads(1)
    llm = SpeechLLM(build_default())  # loads while the server starts
    expected = summarize_long(llm, "cascade", audio=str(AUDIO), prompt=PROMPT, max_new_tokens=TOKENS,
                              force_chapters=True)
    assert expected.text and expected.transcript
    _wait_http(url, server, log, timeout=180)
    browser = _browser()
    try:
        wait = WebDriverWait(browser, 60)
        browser.get(url)
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#audio input[type=file]"))

        def value(name: str) -> str:
            return browser.find_element(By.CSS_SELECTOR, f"#{name} textarea").get_attribute("value")

        assert value("prompt") == DEFAULT_SUMMARY_PROMPT and value("answer") == ""
        browser.find_element(By.CSS_SELECTOR, "#audio input[type=file]").send_keys(str(AUDIO))
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#audio audio"))  # uploaded: the player shows
        browser.find_element(By.XPATH, "//*[@id='mode']//label[.//input[@value='cascade']]").click()
        box = browser.find_element(By.CSS_SELECTOR, "#prompt textarea")
        box.clear()
        box.send_keys(PROMPT)
        browser.find_element(By.CSS_SELECTOR, "#chapters-on input[type=checkbox]").click()
        browser.find_element(By.CSS_SELECTOR, "#submit").click()
        seen: list[str] = []

        def answered(b):
            text = value("answer")
            if text and (not seen or seen[-1] != text):
                seen.append(text)
            return value("status").startswith(("done", "error", "warning"))

        WebDriverWait(browser, 240, poll_frequency=0.1).until(answered)
        status = value("status")
        assert status.startswith(f"done: audio {expected.audio_seconds:.1f} s · speech check "), status
        assert re.search(r"ASR [\d.]+ s · generate [\d.]+ s · total [\d.]+ s$", status), status
        assert value("answer") == expected.text
        assert value("heard") == expected.transcript
        assert value("chapters") == format_chapters(expected.chapters) and value("chapters").startswith("00:00-")
        # it streamed: the page showed the answer growing, each state a prefix of the final answer
        assert len(seen) >= 3 and all(expected.text.startswith(s) for s in seen), seen
        if SCREENSHOT:
            assert browser.save_screenshot(str(Path(SCREENSHOT).resolve()))
    finally:
        browser.quit()
    server.send_signal(signal.SIGINT)  # Ctrl-C: the server closes and exits 0
    assert server.wait(timeout=30) == 0, log.read_text()[-3000:]
    assert "server stopped" in log.read_text()


@pytest.mark.integration
def test_ctrl_c_stops_a_server_started_with_sigint_ignored(tmp_path):
    """A background job of a script (`audio-minichat serve &` without job control) starts with SIGINT ignored; the
    server installs its own handler, so Ctrl-C / `kill -INT` still closes it cleanly (exit 0, "server stopped")."""
    from audio_minichat.assets.default_build import build_default

    build_default()
    port, log = _free_port(), tmp_path / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "-m", "audio_minichat.app.cli", "serve", "--port", str(port),
                                   "--threads", "1"], stdout=out, stderr=subprocess.STDOUT, env=_env(), cwd=tmp_path,
                                  preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        _wait_http(f"http://127.0.0.1:{port}/", server, log, timeout=180)
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=30) == 0, log.read_text()[-3000:]
        assert "server stopped" in log.read_text()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=30)
