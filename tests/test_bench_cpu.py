"""scripts/bench_cpu.py's harness (no faster-whisper / llama.cpp needed): the paired order, the child's rusage
(peak memory of a child that allocates a known amount, CPU time, exit status), the stage times read from a child's
JSON, medians and ratios, the table, the prompt the hand-built pipeline sends, and the one-line refusal when the
anchor's packages are missing."""

from __future__ import annotations

import importlib.util
import runpy
import subprocess
import sys
from types import SimpleNamespace

import pytest

from conftest import HIDE_MODULES, REPO_ROOT


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _script("bench_cpu")
handbuilt = _script("handbuilt_pipeline")


def test_rounds_alternate_their_order():
    orders = bench.round_orders(["handbuilt", "cascade", "e2e", "text"], 4)
    assert orders == [["handbuilt", "cascade", "e2e", "text"], ["text", "e2e", "cascade", "handbuilt"]] * 2
    assert bench.round_orders(["a"], 1) == [["a"]]


def test_measure_reads_the_childs_peak_memory_cpu_and_status():
    big = bench.measure([sys.executable, "-c", "b = b'x' * (200 << 20); print(len(b))"])
    small = bench.measure([sys.executable, "-c", "print('hi')"])
    assert big["returncode"] == 0 and big["stdout"].strip() == str(200 << 20)
    assert big["peak_rss_mib"] >= 200 > small["peak_rss_mib"]  # ru_maxrss KiB -> MiB; the parent's own not counted
    spin = bench.measure([sys.executable, "-c", "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass"])
    assert spin["cpu_s"] == pytest.approx(spin["user_s"] + spin["sys_s"]) and spin["cpu_s"] >= 0.4
    assert spin["wall_s"] >= 0.4
    failed = bench.measure([sys.executable, "-c", "import sys; print('oops', file=sys.stderr); sys.exit(3)"])
    assert failed["returncode"] == 3 and failed["stderr"].strip() == "oops"
    slow = bench.measure([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)
    assert slow["returncode"] != 0 and slow["stderr"].strip().endswith("timed out after 0.5 s")


def test_child_json_and_stage_times():
    project = 'The answer,\n{with a brace} in it.\n{\n  "answer": "A.",\n  "timings": {\n    "asr_s": 1.5,\n' \
              '    "generate_s": 2,\n    "load_s": 0.25\n  },\n  "speech": null\n}\n'
    record = bench.parse_child_json(project)
    assert record["answer"] == "A." and bench.stage_times(record) == {"asr_s": 1.5, "generate_s": 2.0, "load_s": 0.25}
    one_line = 'answer\n{"timings": {"import_s": 0.5, "ok": true, "name": "x"}, "completion_tokens": 7}'
    assert bench.stage_times(bench.parse_child_json(one_line)) == {"import_s": 0.5}
    assert bench.parse_child_json("no json here\n") is None and bench.stage_times(None) == {}
    assert bench.parse_child_json('{"a": 1}\ntrailing words') is None  # the JSON must end the output


def _run(command, round_index, wall, cpu=1.0, rss=100.0, rc=0, warmup=False, **stages):
    return {"command": command, "audio": "a.wav", "round": round_index, "wall_s": wall, "cpu_s": cpu,
            "peak_rss_mib": rss, "returncode": rc, "stages": stages, "warmup": warmup, "answer_tokens": 10}


def test_medians_and_ratios_to_the_hand_built_pipeline():
    runs = [
        _run("handbuilt", -1, 100.0, warmup=True),  # warm-up: not counted
        _run("handbuilt", 0, 2.0, cpu=4.0, rss=200, asr_s=1.0), _run("handbuilt", 1, 4.0, cpu=6.0, rss=300, asr_s=2.0),
        _run("handbuilt", 2, 3.0, cpu=5.0, rss=250, asr_s=3.0),
        _run("cascade", 0, 3.0, cpu=2.0, rss=400, asr_s=0.5), _run("cascade", 1, 4.0, cpu=3.0, rss=500, asr_s=0.7),
        _run("cascade", 2, 6.0, cpu=4.0, rss=600, asr_s=0.9),
        _run("e2e", 0, 1.0, rc=1),  # failed: counted as failed, not in the medians
        _run("e2e", 1, 1.5), _run("e2e", 2, 9.0),
        _run("version", 0, 0.1), _run("version", 1, 0.2),
    ]
    rows = bench.summarize(runs)["a.wav"]
    hb, cascade, e2e = rows["handbuilt"], rows["cascade"], rows["e2e"]
    assert (hb["runs"], hb["wall_s"], hb["cpu_s"], hb["peak_rss_mib"], hb["stages"]) == (3, 3.0, 5.0, 250, {"asr_s": 2.0})
    assert hb["x_wall"] == hb["x_cpu"] == hb["x_rss"] == hb["paired_x_wall"] == 1.0
    assert (cascade["wall_s"], cascade["cpu_s"], cascade["peak_rss_mib"], cascade["stages"]) == (4.0, 3.0, 500, {"asr_s": 0.7})
    assert cascade["x_wall"] == pytest.approx(4 / 3) and cascade["x_cpu"] == pytest.approx(3 / 5)
    assert cascade["x_rss"] == pytest.approx(2.0)
    assert cascade["paired_x_wall"] == pytest.approx(1.5)  # median of 3/2, 4/4, 6/3
    assert (e2e["runs"], e2e["failed"], e2e["wall_s"]) == (2, 1, 5.25)
    assert e2e["paired_x_wall"] == pytest.approx((1.5 / 4 + 9 / 3) / 2)
    version = rows["version"]  # start-up alone: its median, no ratio to a whole pipeline
    assert version["wall_s"] == pytest.approx(0.15) and version["x_wall"] is version["paired_x_wall"] is None

    meta = {"rounds": 3, "threads": 2, "max_new_tokens": 64, "cpus": 2, "load_before": "0.1", "load_after": "0.2"}
    table = bench.markdown({"a.wav": rows}, meta).splitlines()
    assert "| command | wall s | x | CPU s | x | peak RSS MiB | x | answer tokens | stages (median s) |" in table
    assert "| handbuilt | 3.00 | 1.00 | 5.00 | 1.00 | 250 | 1.00 | 10 | asr 2.00 |" in table
    assert "| cascade | 4.00 | 1.33 | 3.00 | 0.60 | 500 | 2.00 | 10 | asr 0.70 |" in table
    assert "| e2e (1 failed) | 5.25 | 1.75 | 1.00 | 0.20 | 100 | 0.40 | 10 | - |" in table
    assert "| version | 0.15 | - | 1.00 | - | 100 | - | 10 | - |" in table


def test_every_command_gets_the_same_prompt_limit_and_threads():
    args = SimpleNamespace(prompt="Sum it up:", max_new_tokens=33, threads=2)
    lines = {c: bench.command_line(c, "a.wav", "the transcript", args) for c in bench.COMMANDS}
    for name in ("handbuilt", "cascade", "e2e", "text"):
        argv = lines[name]
        for flag, value in (("--prompt", "Sum it up:"), ("--max-new-tokens", "33"), ("--threads", "2")):
            assert argv[argv.index(flag) + 1] == value, (name, flag)
        assert "--json" in argv
    assert lines["handbuilt"][1:3] == [str(REPO_ROOT / "scripts" / "handbuilt_pipeline.py"), "a.wav"]
    assert lines["cascade"][lines["cascade"].index("--mode") + 1] == "cascade" and "--raw" in lines["cascade"]
    assert lines["e2e"][lines["e2e"].index("--mode") + 1] == "e2e" and "a.wav" in lines["e2e"]
    assert lines["text"][lines["text"].index("--text") + 1] == "the transcript" and "a.wav" not in lines["text"]
    assert lines["version"][-1] == "--version"
    with pytest.raises(ValueError, match="unknown command 'nope'"):
        bench.command_line("nope", "a.wav", None, args)


def test_hand_built_prompt_is_the_projects_user_turn():
    """The user message the hand-built pipeline sends is the one audio-minichat renders for text and cascade."""
    from audio_minichat import AudioMiniChatProcessor

    for position in ("before", "after"):
        parts = AudioMiniChatProcessor.audio_with_text(handbuilt.DEFAULT_PROMPT, position)
        ours = AudioMiniChatProcessor.render_content(parts, "<|audio|>").replace("<|audio|>", "HELLO WORLD.")
        assert handbuilt.user_message(handbuilt.DEFAULT_PROMPT, "HELLO WORLD.", position) == ours
    from audio_minichat.app.choices import DEFAULT_SUMMARY_PROMPT

    assert handbuilt.DEFAULT_PROMPT == DEFAULT_SUMMARY_PROMPT





@pytest.mark.parametrize("hidden", ["faster_whisper", "faster_whisper,llama_cpp"])
def test_missing_anchor_is_refused_in_one_line(tmp_path, hidden):
    (tmp_path / "sitecustomize.py").write_text(HIDE_MODULES, encoding="utf-8")  # first on PYTHONPATH
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path), "HIDE_MODULES": hidden}
    for script, args in (("bench_cpu.py", ["--rounds", "1"]), ("handbuilt_pipeline.py", ["x.wav"])):
        done = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / script), *args], capture_output=True,
                              text=True, env=env, timeout=60)
        lines = done.stderr.strip().splitlines()
        assert done.returncode != 0 and len(lines) == 1, (script, done.stderr)
        for module in hidden.split(","):
            assert module in lines[0], (script, lines[0])
        absent = "llama_cpp" in hidden or importlib.util.find_spec("llama_cpp") is None
        assert "pip install -e '.[bench]'" in lines[0] and ("llama_cpp (llama-cpp-python)" in lines[0]) == absent
        assert done.stdout == ""


def test_bench_extra_is_faster_whisper_outside_all_and_test_and_llama_cpp_of_extra_fast(monkeypatch):
    import setuptools

    captured: dict = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
    monkeypatch.chdir(REPO_ROOT)
    runpy.run_path(str(REPO_ROOT / "setup.py"), run_name="__main__")
    extras = captured["extras_require"]
    names = {r.split(">")[0].split("<")[0] for r in extras["bench"]}
    assert names == {"faster-whisper", "llama-cpp-python"}
    faster_whisper = [r for r in extras["bench"] if r.startswith("faster-whisper")]
    assert not any(r in extras["all"] or r in extras["test"] for r in faster_whisper)
    # llama.cpp is the route of extra "fast" (inference/gguf_llm.py), which the tests exercise
    assert extras["fast"] == [r for r in extras["bench"] if r.startswith("llama-cpp-python")]
    assert extras["fast"][0] in extras["all"] and extras["fast"][0] in extras["test"]
