"""The cascade and the text mode without torch (issue 26): the LLM in llama.cpp from the checkpoint's own GGUF file
(inference/gguf_llm.py), Whisper in CTranslate2 (inference/gguf_cascade.py), chosen by ``--llm-backend``
(app/llm_route.py). Checked on the real offline default: the same prompt and tokens as the processor, the same
decoding rule as the model's ``answer_no_repeat_ngram_size``, the same transcript and speech check as ``SpeechLLM``,
an answer that does not depend on the prefill, and a command line that never imports torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("llama_cpp", reason="the llama.cpp route needs llama-cpp-python (extra fast; scripts/install.sh --test)")

from audio_minichat.inference.gguf_llm import GgufLLM, banned_tokens, gguf_file, unavailable  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NEWS = ROOT / "examples" / "news_2min.wav"
PROMPT = "Summarize the following speech in a few sentences:"


@pytest.fixture(scope="module")
def default_dir():
    from audio_minichat.assets.default_build import build_default

    return build_default()


@pytest.fixture(scope="module")
def reference(default_dir):
    from audio_minichat.inference.speech_llm import SpeechLLM

    return SpeechLLM(default_dir)


@pytest.fixture(scope="module")
def light(default_dir, reference):
    from audio_minichat.inference.gguf_cascade import GgufSpeechLLM

    reference.transcribe(str(NEWS))  # writes the checkpoint's CTranslate2 Whisper folder (the first cascade does)
    return GgufSpeechLLM(default_dir, threads=1)


def test_the_default_names_its_gguf_file_and_others_say_why_not(default_dir, tmp_path):
    assert gguf_file(default_dir).name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert unavailable(default_dir) is None
    config = json.loads((Path(default_dir) / "config.json").read_text())
    config["provenance"]["llm"] = "HuggingFaceTB/SmolLM2-135M-Instruct"  # a hub LLM: no GGUF file
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert unavailable(tmp_path) == "the checkpoint's LLM was not built from a GGUF file found on this machine"


@pytest.mark.parametrize("prompt,position", [(PROMPT, "before"), ("What is said about the fish?", "after"), (None, "before")])
def test_prompt_and_tokens_are_the_processors(reference, light, prompt, position):
    content = (ROOT / "examples" / "news_2min.txt").read_text(encoding="utf-8")
    processor = reference.processor
    built = processor.build_prompt(processor.audio_with_text(prompt, position), transcripts=[content])
    assert light.llm.prompt(content, prompt, position) == built
    assert light.llm.encode(built) == processor(text=built)["input_ids"][0].tolist()
    # what inference.longform reads of a processor, the same
    assert light.processor.build_prompt(processor.audio_with_text(prompt, position)) == processor.build_prompt(
        processor.audio_with_text(prompt, position))
    assert light.processor.max_context_length == processor.max_context_length


def test_banned_tokens_follow_the_models_answer_no_repeat_rule():
    from audio_minichat.modeling_audio_minichat import AnswerNoRepeatNGram

    rng = np.random.default_rng(0)
    for _ in range(200):
        size = int(rng.integers(1, 5))
        prompt, answer = rng.integers(0, 6, 7).tolist(), rng.integers(0, 6, int(rng.integers(0, 12))).tolist()
        scores = torch.zeros(1, 6)
        out = AnswerNoRepeatNGram(size, len(prompt))(torch.tensor([prompt + answer]), scores)
        expected = sorted(int(t) for t in torch.nonzero(torch.isinf(out[0])).flatten())
        assert banned_tokens(answer, size) == expected, (size, answer)


def test_cascade_transcript_and_answer(reference, light):
    from audio_minichat.audio_io import load_audio
    from audio_minichat.inference.ct2_asr import Ct2Whisper
    from audio_minichat.metrics.wer import word_error_rate

    answer = light.cascade(str(NEWS), PROMPT, max_new_tokens=48)
    clip = load_audio(str(NEWS), None, 16000)
    # the route's Whisper in its compute type (int8 on a CPU with VNNI), whose float32 run is transformers' transcript
    assert answer.transcript == Ct2Whisper(light._folder, 1, compute_type=light.asr_compute_type).transcribe(clip)
    float32 = Ct2Whisper(light._folder, 1).transcribe(clip)
    assert float32 == reference.transcribe(str(NEWS)).text
    assert word_error_rate([float32], [answer.transcript]) < 0.05
    assert answer.mode == "cascade" and answer.asr_backend == "ctranslate2" and answer.finish_reason == "length"
    assert answer.timings["prefilled_tokens"] > 0  # the prompt's beginning was read while Whisper ran
    # the prefill changes nothing: the same answer from the transcript alone
    assert light.text(answer.transcript, PROMPT, max_new_tokens=48).text == answer.text
    assert "ferr" in answer.text.lower() or "tid" in answer.text.lower(), answer.text


def test_speech_check_matches_speech_llm_on_steady_noise(reference, light):
    rng = np.random.default_rng(1)
    noise = (0.05 * rng.standard_normal(16000 * 4)).astype(np.float32)  # steady: Whisper's vote counts
    ours, theirs = light.check_speech(noise), reference.check_speech(noise)
    assert ours.speech == theirs.speech and ours.reason is not None
    # (float32 weights: the same numbers within float32 reductions; int8 weights: within their quantisation)
    tolerance = 2e-3 if light.asr_compute_type == "float32" else 0.05
    assert ours.no_speech_prob == pytest.approx(theirs.no_speech_prob, abs=tolerance)


@pytest.mark.parametrize("mode", ["cascade", "e2e"])
def test_command_line_runs_without_torch(light, default_dir, mode):
    code = ("import sys, json; from audio_minichat.app.cli import run; "
            f"r = run(['summarize', {str(NEWS)!r}, '--model', {str(default_dir)!r}, '--llm-backend', 'llama.cpp', '--mode', {mode!r}, "
            "'--max-new-tokens', '16', '--quiet']); res = r['results'][0]; "
            "print(json.dumps({'torch': 'torch' in sys.modules, 'transformers': 'transformers' in sys.modules, "
            "'backend': res['llm_backend'], 'dtype': res['dtype'], "
            "'answer': res['answer']}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"torch": False, "transformers": False, "backend": "llama.cpp", "dtype": None, "answer": result["answer"]}
    assert result["answer"]


def test_llama_cpp_asked_for_where_it_cannot_run_is_one_line(default_dir, capsys):
    from audio_minichat.app.cli import main

    code = main(["summarize", str(NEWS), "--model", str(default_dir), "--dtype", "bfloat16", "--llm-backend", "llama.cpp"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "--llm-backend llama.cpp: --dtype bfloat16 sets transformers' weights" in err


def test_prefill_keeps_only_the_shared_prefix(light):
    llm: GgufLLM = light.llm
    news = (ROOT / "examples" / "news_2min.txt").read_text(encoding="utf-8")
    prompt = llm.prompt(news[:1200], PROMPT)
    plain = llm.generate(prompt, 12)[0]
    llm.prefill(llm.prompt(news[:600] + " Something else entirely, about a cat on a roof." + news[600:1200], PROMPT))
    again, _, _, timings = llm.generate(prompt, 12)  # the wrong guess's blocks are evaluated again
    assert again == plain and 0 < timings["prefilled_tokens"] < timings["prompt_tokens"] - 64
    assert timings["prefilled_tokens"] % 64 == 0


def test_long_content_is_cut_into_chapters_on_the_llama_cpp_route(light, default_dir):
    """inference.longform reads the route's torch-free processor (TextPrompts): text is split at its tokens' offsets,
    each piece summarized, then the summaries combined."""
    from audio_minichat.app.cli import run

    result = run(["summarize", "--mode", "text", str(ROOT / "examples" / "news_2min.txt"), "--model", str(default_dir),
                  "--llm-backend", "llama.cpp", "--segment-seconds", "40", "--chapters", "--max-new-tokens", "24",
                  "--quiet"])["results"][0]
    assert result["llm_backend"] == "llama.cpp" and result["answer"]
    assert len(result["chapters"]) >= 3 and all(c["text"] for c in result["chapters"])


# ---- e2e (the soft cascade) without torch: inference/ct2_soft_tokens.py -----------------------------------------------
def test_e2e_embeddings_are_the_torch_front_ends(reference, light):
    """Whisper's tokens and the top-k mixtures of the LLM's embeddings from CTranslate2's scores: the same tokens and
    (float32, sums of 8 products of 576-wide rows) the same embeddings as frontend_asr_tokens on the 2-minute example."""
    from audio_minichat.audio_io import load_audio
    from audio_minichat.inference.ct2_soft_tokens import SoftTokens

    clip = load_audio(str(NEWS), None, 16000)
    processor, model = reference.processor, reference.model
    inputs = processor(text=processor.build_prompt(processor.audio_with_text(PROMPT, "before")), audio=[clip], sampling_rate=16000)
    with torch.no_grad():
        out = model.audio_frontend(inputs["input_features"], inputs["input_features_mask"], inputs["audio_window_clip"],
                                   token_table=model.get_input_embeddings().weight)
    from audio_minichat.inference.ct2_asr import Ct2Whisper

    embeddings, tokens = SoftTokens(light.model_dir, Ct2Whisper(light._folder, 1)).read(clip)  # (float32: the reference)
    assert len(inputs["input_features"]) == 4 and tokens == out.token_ids[0].tolist()
    expected = out.filled_embeddings()[0].float().numpy()
    assert embeddings.shape == expected.shape == (len(tokens) + 2, 576)  # (" 2024"-like tokens fill a slot per piece)
    np.testing.assert_allclose(embeddings, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("prompt,position", [(PROMPT, "before"), ("What is said about the fish?", "after"), (None, "before")])
def test_e2e_prompt_around_the_audio_is_the_processors(reference, light, prompt, position):
    processor = reference.processor
    ids = processor(text=processor.build_prompt(processor.audio_with_text(prompt, position)), audio=[np.zeros(16000, np.float32)],
                    sampling_rate=16000)["input_ids"][0].tolist()
    audio_id = processor.tokenizer.convert_tokens_to_ids(processor.audio_token)
    head, tail = light.llm.audio_prompt(prompt, position)
    slots = processor.num_audio_tokens(16000)
    assert ids == head + [audio_id] * slots + tail
    assert light.processor.num_audio_tokens(16000) == slots  # what inference.longform reads, torch-free


def test_llama_cpp_reads_embeddings_as_transformers_does(reference, light):
    """The same input embeddings (a prompt's own token embeddings) give llama.cpp and transformers the same next token,
    and the prompt as tokens gives llama.cpp the same one: the embedding path is the token path."""
    from audio_minichat.utils.safetensors_view import tensor_view
    from audio_minichat.inference.ct2_soft_tokens import embedding_table_name

    llm = light.llm
    ids = llm.encode(llm.prompt((ROOT / "examples" / "short.txt").read_text(encoding="utf-8"), PROMPT))
    table = tensor_view(light.model_dir, embedding_table_name(light.model_dir))
    embeddings = np.asarray(table[ids], dtype=np.float32)
    llm._evaluate_parts([embeddings])
    from_embeddings = llm._logits().copy()
    llm._evaluate_parts([ids])
    from_tokens = llm._logits().copy()
    with torch.no_grad():
        hf = reference.model.language_model(inputs_embeds=torch.from_numpy(embeddings)[None]).logits[0, -1].float().numpy()
    assert int(np.argmax(from_embeddings)) == int(np.argmax(from_tokens)) == int(np.argmax(hf))
    assert set(np.argsort(-from_embeddings)[:3]) == set(np.argsort(-hf)[:3])


def test_e2e_answers_follow_their_own_audio(light):
    """Each clip's answer carries its own clip's content (a fixed answer cannot pass both); the transcript field is
    what the LLM read; the answer does not depend on the order things were evaluated in before."""
    news = light.e2e(str(NEWS), PROMPT, max_new_tokens=40)
    short = light.e2e(str(ROOT / "examples" / "short.wav"), PROMPT, max_new_tokens=40)
    assert news.mode == "e2e" and news.timings["asr_s"] > 0 and news.warning is None
    assert any(w in news.text.lower() for w in ("ferr", "tid")), news.text
    assert any(w in short.text.lower() for w in ("maya", "tom", "bridge", "late", "meeting")), short.text
    assert "ferr" not in short.text.lower() and "Mill Road" in short.transcript
    assert light.e2e(str(NEWS), PROMPT, max_new_tokens=40).text == news.text


def test_e2e_route_says_why_not_for_a_trained_state_projection(default_dir, light, tmp_path):
    """The route computes the mixture only: a checkpoint whose decoder-state projection is not zero keeps transformers."""
    from safetensors.numpy import save_file

    from audio_minichat.inference.ct2_soft_tokens import _unavailable
    from audio_minichat.inference.ct2_soft_tokens import unavailable as soft_unavailable

    for name in ("config.json", "processor_config.json"):
        (tmp_path / name).write_text((Path(default_dir) / name).read_text())
    text = json.loads((tmp_path / "config.json").read_text())["text_config"]
    weights = {"audio_frontend.asr_token_map": -np.ones((8, 2), np.int64),
               "audio_frontend.projector.log_temperature": np.zeros((), np.float32),
               "audio_frontend.projector.net.0.weight": np.zeros((4, 3), np.float32),
               "language_model.model.embed_tokens.weight": np.zeros((text["vocab_size"], text["hidden_size"]), np.float32)}
    save_file(weights, str(tmp_path / "model.safetensors"))
    assert soft_unavailable(tmp_path, light._folder) is None
    read = _unavailable.cache_info().misses
    assert soft_unavailable(tmp_path, light._folder) is None and _unavailable.cache_info().misses == read  # asked again: not read again
    weights["audio_frontend.projector.net.0.weight"][1, 2] = 0.5
    save_file(weights, str(tmp_path / "model.safetensors"))
    assert "decoder-state projection is trained" in soft_unavailable(tmp_path, light._folder)


def test_the_routes_whisper_is_int8_only_on_cpus_like_those_it_was_measured_on():
    from audio_minichat.inference.ct2_asr import fast_compute_type

    offered = {"float32", "int8", "int16", "int8_float32"}
    assert fast_compute_type({"avx2", "avx512f", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile"}, offered) == "int8"
    # AMD's kernels (stood in for: AVX-512 BF16/VNNI, AVX2) and Intel without AMX: measured faster too
    assert fast_compute_type({"avx2", "avx512f", "avx512_bf16", "avx512_vnni"}, offered) == "int8"
    assert fast_compute_type({"avx2", "avx_vnni"}, offered) == "int8"
    assert fast_compute_type({"sse4_2", "avx"}, offered) == "float32"  # no AVX2: not measured, the reference
    assert fast_compute_type({"amx_int8"}, {"float32"}) == "float32"  # a CTranslate2 that offers no int8


def test_e2e_windows_read_in_groups_are_read_alike(light, monkeypatch):
    """A long recording's windows are decoded a few at a time (ct2_soft_tokens.WINDOW_BATCH): the same tokens and
    embeddings as all side by side."""
    from audio_minichat.audio_io import load_audio
    from audio_minichat.inference import ct2_soft_tokens
    from audio_minichat.inference.ct2_soft_tokens import SoftTokens

    clip = load_audio(str(NEWS), None, 16000)
    soft = SoftTokens(light.model_dir, light.asr)
    together, tokens = soft.read(clip)
    monkeypatch.setattr(ct2_soft_tokens, "WINDOW_BATCH", 3)  # 4 windows: a group of 3, then 1
    apart, tokens_apart = soft.read(clip)
    assert tokens_apart == tokens
    np.testing.assert_allclose(apart, together, atol=1e-5, rtol=0)


LLAMA3_STYLE = ("{{ bos_token }}{% for message in messages %}{% if loop.index0 == 0 and message['role'] != 'system' %}"
                "{{ '<|start_header_id|>system<|end_header_id|>\n\nYou are helpful.<|eot_id|>' }}{% endif %}"
                "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
                "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
CONTROL_STYLE = ("{%- for message in messages %}\n  {%- if message['role'] not in ['user', 'assistant', 'system'] %}"
                 "{{ raise_exception('bad role') }}{% endif %}\n  {%- if loop.last and not add_generation_prompt %}{% break %}{% endif %}\n"
                 "[{{ message['role'] | upper }}] {{ message | tojson }}\n{%- endfor %}\n{%- if add_generation_prompt %}\n[ASSISTANT] {% endif %}")


@pytest.mark.parametrize("template", ["default", LLAMA3_STYLE, CONTROL_STYLE])
def test_chat_templates_render_as_transformers_renders_them(default_dir, template):
    """prompt_parts.render_chat (jinja2 alone, no transformers import) against transformers' own renderer: the same
    text for the default's template, a Llama-3-style one and one with loop controls, tojson and raise_exception."""
    from transformers.utils.chat_template_utils import render_jinja_template

    from audio_minichat.prompt_parts import render_chat

    if template == "default":
        template = (Path(default_dir) / "chat_template.jinja").read_text(encoding="utf-8")
    messages = [{"role": "system", "content": "Be brief <b>&</b>."}, {"role": "user", "content": "A \"quoted\" é\n<|audio|>"}]
    for chat in (messages, messages[1:]):
        for generation in (True, False):
            expected = render_jinja_template(conversations=[chat], chat_template=template, add_generation_prompt=generation,
                                             bos_token="<s>", eos_token="</s>")[0][0]
            assert render_chat(template, chat, add_generation_prompt=generation, bos_token="<s>", eos_token="</s>") == expected
