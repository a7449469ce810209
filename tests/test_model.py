"""Model: batch invariance, long audio, generation, loss, errors and save/load round trips."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import soundfile as sf
import torch
from conftest import ASR_TOKENS_TINY, audio_only, fill_token_map, make_model, speechlike, tolerances

from audio_minichat import AudioMiniChatForConditionalGeneration


def _prompts(processor):
    return [
        processor.build_prompt([{"type": "text", "text": "summarize the speech"}, {"type": "audio"}]),
        processor.build_prompt("hello <|audio|> and <|audio|>"),
    ]


# (encoder, front end, its options, the second clip's seconds: qformer's spans two windows)
PADDING_CASES = [(kind, frontend, {}, 5.1) for kind in ("whisper", "hubert", "wav2vec2") for frontend in ("pool", "stack", "ctc_pool", "posterior")]
PADDING_CASES.append(("whisper", "qformer", {"qformer_queries": 12}, 35.0))


@pytest.mark.parametrize("kind,audio_frontend,options,seconds", PADDING_CASES, ids=lambda v: v if isinstance(v, str) else "")
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_padded_batch_matches_each_sample_alone(kind, audio_frontend, options, seconds, padding_side):
    model, processor = make_model(kind, audio_frontend=audio_frontend, frontend_config=options,
                                  projector_type="mlp" if kind == "hubert" else "linear")
    clips = [speechlike(2.3, 1), speechlike(seconds, 2), speechlike(0.7, 3)]
    spans = [[(0.0, 0.5), (0.5, 1.2), (1.3, 2.2)], [(0.1, 0.3)], [(0.0, 0.6), (0.6, 0.7)]]
    spans = spans if audio_frontend == "ctc_pool" else None
    prompts = _prompts(processor)
    batch = processor(text=prompts, audio=clips, sampling_rate=16000, audio_spans=spans, padding_side=padding_side)
    singles = [
        processor(text=prompts[0], audio=clips[:1], sampling_rate=16000, audio_spans=spans and spans[:1]),
        processor(text=prompts[1], audio=clips[1:], sampling_rate=16000, audio_spans=spans and spans[1:]),
    ]
    with torch.no_grad():
        batched = model(**batch).logits
        for row, single in enumerate(singles):
            alone = model(**single).logits[0]
            n = alone.shape[0]
            part = batched[row, -n:] if padding_side == "left" else batched[row, :n]
            torch.testing.assert_close(part, alone, **tolerances(reduction=model.config.text_config.intermediate_size))


def test_clip_longer_than_30s_uses_windows_and_matches_count():
    model, processor = make_model("whisper")
    clip = speechlike(70.0)
    inputs = processor(text=processor.build_prompt("summarize <|audio|>"), audio=clip, sampling_rate=16000)
    assert inputs["input_features"].shape[0] == 3  # 3 windows of 23.3 s
    with torch.no_grad():
        feats = model.get_audio_features(
            inputs["input_features"], inputs["input_features_mask"], inputs["audio_window_clip"]
        )
        logits = model(**inputs).logits
    # 3 windows of ~373333 samples -> 2333 mel frames -> 1167 encoder frames each; pool(8, 4) over 3501 frames
    assert feats.embeddings[0].shape[0] == processor.num_audio_tokens(len(clip)) == (3 * 1167 - 8 + 3) // 4 + 1 == 875
    assert torch.isfinite(logits).all()
    # a 10-minute recording works too (20 windows), with the encoder fed 8 windows per forward
    ten = processor(text=processor.build_prompt("<|audio|>"), audio=speechlike(600.0), sampling_rate=16000)
    assert ten["input_features"].shape[0] == 20
    with torch.no_grad():
        out = model(**ten).logits
    assert out.shape[1] == ten["input_ids"].shape[1]


def test_window_encoding_matches_direct_encoder_on_full_window():
    """The unpadded-window encoder equals HF's WhisperEncoder when the window is a full 30 s."""
    model, processor = make_model("whisper")
    clip = speechlike(30.0)
    inputs = processor(text=processor.build_prompt("<|audio|>"), audio=clip, sampling_rate=16000)
    with torch.no_grad():
        ours, lengths = model.audio_frontend.encode_windows(inputs["input_features"], inputs["input_features_mask"])
        reference = model.audio_encoder(inputs["input_features"]).last_hidden_state
    assert int(lengths[0]) == 1500
    torch.testing.assert_close(ours, reference, **tolerances(reduction=model.config.audio_config.encoder_ffn_dim))


def test_generate_encodes_audio_once_and_batch_matches_single():
    model, processor = make_model("whisper")
    calls = []
    model.projector.register_forward_hook(lambda *a: calls.append(1))
    clips = [speechlike(1.2, 1), speechlike(2.5, 2), speechlike(0.9, 3)]
    prompts = _prompts(processor)
    batch = processor(text=prompts, audio=clips, sampling_rate=16000)
    bad = [processor.tokenizer.eos_token_id, processor.audio_token_id]
    out = model.generate(**batch, max_new_tokens=6, do_sample=False, suppress_tokens=bad)
    assert len(calls) == 1
    new = out[:, batch["input_ids"].shape[1] :]
    assert new.shape == (2, 6)
    first = processor(text=prompts[0], audio=clips[:1], sampling_rate=16000)
    alone = model.generate(**first, max_new_tokens=6, do_sample=False, suppress_tokens=bad)
    assert torch.equal(alone[0, first["input_ids"].shape[1] :], new[0])


def test_labels_give_next_token_loss():
    model, processor = make_model("whisper")
    prompts = _prompts(processor)
    clips = [speechlike(1.0, 1), speechlike(1.5, 2), speechlike(0.5, 3)]
    batch = processor(text=prompts, audio=clips, sampling_rate=16000, responses=["hello world .", "one two"])
    out = model(**batch)
    logits = out.logits[:, :-1].reshape(-1, out.logits.shape[-1])
    manual = torch.nn.functional.cross_entropy(logits, batch["labels"][:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, manual)
    out.loss.backward()
    assert model.projector.net[0].weight.grad.abs().sum() > 0


def test_model_errors_are_clear():
    model, processor = make_model("whisper")
    inputs = processor(text=processor.build_prompt("<|audio|>"), audio=speechlike(2.0), sampling_rate=16000)
    with pytest.raises(ValueError, match="no audio features were given"):
        model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    other = processor(text=processor.build_prompt("<|audio|>"), audio=speechlike(4.0), sampling_rate=16000)
    with pytest.raises(ValueError, match=r"holds \d+ audio placeholder tokens but the audio yields \d+ embeddings"):
        model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            input_features=other["input_features"],
            input_features_mask=other["input_features_mask"],
            audio_window_clip=other["audio_window_clip"],
        )
    long_ids = torch.ones(1, model.config.text_config.max_position_embeddings + 1, dtype=torch.long)
    with pytest.raises(ValueError, match="but the LLM's context is 8192 tokens"):
        model(input_ids=long_ids, attention_mask=torch.ones_like(long_ids))


def test_from_components_keeps_pretrained_parts():
    model, processor = make_model("whisper")
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    asr = WhisperForConditionalGeneration(WhisperConfig(**model.config.audio_config.to_dict()))
    built = AudioMiniChatForConditionalGeneration.from_components(
        model.language_model, asr, audio_token_id=processor.audio_token_id, audio_frontend="stack", frontend_config={"stack_factor": 2}
    )
    assert built.audio_encoder is asr.get_encoder()
    assert built.language_model is model.language_model
    assert built.projector.net[0].in_features == 2 * model.config.audio_config.d_model
    assert not any(p.is_meta for p in built.parameters())


SUBPROCESS = textwrap.dedent(
    """
    import json, sys, torch
    from transformers import AutoConfig, AutoModel, AutoProcessor, pipeline
    d, wav, spans = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    assert "audio_minichat" not in sys.modules
    config = AutoConfig.from_pretrained(d, trust_remote_code=True)
    model = AutoModel.from_pretrained(d, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(d, trust_remote_code=True)
    inputs = processor(text=processor.build_prompt("summarize <|audio|>"), audio=wav, audio_spans=spans)
    with torch.no_grad():
        logits = model(**inputs).logits[0, -1].tolist()
    pipe = pipeline(model=d, trust_remote_code=True)
    bad = processor.tokenizer.all_special_ids + [processor.audio_token_id]
    extra = {"audio_spans": spans[0]} if spans else {}
    result = pipe(wav, prompt="summarize", max_new_tokens=5, suppress_tokens=bad, **extra)
    print(json.dumps({"config": type(config).__name__, "model": type(model).__module__, "logits": logits,
                      "text": result["generated_text"], "layout": processor.audio_layout}))
    """
)


FRONT_END_KWARGS = [{}, {"audio_frontend": "stack", "frontend_config": {"stack_factor": 3}}, {"audio_frontend": "ctc_pool"},
                    ASR_TOKENS_TINY, {"audio_frontend": "qformer", "frontend_config": {"qformer_queries": 12}},
                    {"audio_frontend": "posterior", "frontend_config": {"posterior_top_k": 5}}]


def test_every_registered_front_end_is_round_tripped():
    from audio_minichat import AUDIO_FRONTENDS

    assert sorted(kw.get("audio_frontend", "pool") for kw in FRONT_END_KWARGS) == sorted(AUDIO_FRONTENDS)


@pytest.mark.parametrize("config_kwargs", FRONT_END_KWARGS, ids=lambda kw: kw.get("audio_frontend", "pool"))
def test_save_then_load_with_remote_code_and_pipeline(tmp_path, config_kwargs):
    model, processor = make_model("whisper", **config_kwargs)
    if hasattr(model.audio_frontend, "asr_token_map"):
        fill_token_map(model)
    spans = [[(0.0, 0.4), (0.4, 1.1), (1.1, 2.0)]] if processor.frontend.needs_spans else None
    save = tmp_path / "ckpt"
    model.save_pretrained(save)
    processor.save_pretrained(save)
    wav = tmp_path / "a.wav"
    sf.write(wav, speechlike(2.0), 16000)
    # the model core ships whole, with relative imports only
    shipped = {p.name for p in save.glob("*.py")}
    assert {"configuration_audio_minichat.py", "processing_audio_minichat.py", "modeling_audio_minichat.py",
            "pipeline_audio_minichat.py", "frontends.py", "frontend_base.py"} <= shipped
    assert {f"frontend_{name}.py" for name in ("pool", "stack", "ctc_pool", "asr_tokens", "qformer", "posterior")} <= shipped
    assert "audio_lora.py" in shipped
    for name in shipped:
        code = (save / name).read_text()
        assert "audio_minichat." not in code.replace("_audio_minichat.", ""), name
        assert "from audio_minichat" not in code and "import audio_minichat" not in code
    config = json.loads((save / "config.json").read_text())
    assert config["audio_config"]["d_model"] == 16 and config["text_config"]["hidden_size"] == 32
    assert config["auto_map"]["AutoModel"] == "modeling_audio_minichat.AudioMiniChatForConditionalGeneration"
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    run = subprocess.run(
        [sys.executable, "-c", SUBPROCESS, str(save), str(wav), json.dumps(spans)], capture_output=True, text=True, env=env,
        cwd=str(tmp_path), timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["config"] == "AudioMiniChatConfig"
    assert got["model"].startswith("transformers_modules")
    inputs = processor(text=processor.build_prompt("summarize <|audio|>"), audio=str(wav), audio_spans=spans)
    bad = processor.tokenizer.all_special_ids + [processor.audio_token_id]
    with torch.no_grad():
        expected = model(**inputs).logits[0, -1]
        gen = model.generate(**inputs, max_new_tokens=5, do_sample=False, suppress_tokens=bad)
    torch.testing.assert_close(torch.tensor(got["logits"]), expected, **tolerances(reduction=model.config.text_config.intermediate_size))
    expected_text = processor.batch_decode(gen[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0].strip()
    assert got["text"] == expected_text and got["text"] != ""
    assert got["layout"] == processor.audio_layout


def test_forward_returns_each_clips_audio_embeddings_on_request():
    model, processor = make_model("whisper")
    model.eval()
    clips = [speechlike(1.1, 1), speechlike(2.6, 2), speechlike(0.8, 3)]
    batch = processor(text=_prompts(processor), audio=clips, sampling_rate=16000)
    with torch.no_grad():
        plain = model(**batch)
        full = model(**batch, output_audio_embeddings=True)
        only = audio_only(model, batch)
        direct = model.get_audio_features(batch["input_features"], batch["input_features_mask"], batch["audio_window_clip"])
    torch.testing.assert_close(full.logits, plain.logits)
    assert plain.get("audio_embeddings") is None
    counts = [processor.num_audio_tokens(len(c)) for c in clips]
    assert [e.shape[0] for e in full.audio_embeddings] == counts == [e.shape[0] for e in only.audio_embeddings]
    for a, b, c in zip(full.audio_embeddings, only.audio_embeddings, direct.embeddings):
        torch.testing.assert_close(a, c)
        torch.testing.assert_close(b, c)
    # with labels, the loss is kept alongside the embeddings
    labels = batch["input_ids"].masked_fill(batch["input_ids"] == model.config.audio_token_id, -100)
    labelled = model(**batch, labels=labels, output_audio_embeddings=True)
    assert labelled.loss is not None and len(labelled.audio_embeddings) == 3


@pytest.mark.parametrize("config_kwargs,seed", [({}, 3), (ASR_TOKENS_TINY, 6)], ids=["pool", "asr_tokens"])
def test_batched_pipeline_gives_each_clip_its_own_answer(config_kwargs, seed):
    """pipe([...], batch_size=2) equals each clip alone: clips of different lengths and numbers of windows."""
    from audio_minichat import AudioMiniChatPipeline

    model, processor = make_model("whisper", seed=seed, **config_kwargs)
    if config_kwargs:
        fill_token_map(model)
    with torch.no_grad():
        model.projector.net[-1].weight.normal_(0.0, 0.5)  # a projector that carries the audio: answers differ by clip
    pipe = AudioMiniChatPipeline(model=model, processor=processor)
    window = processor.layout.window_samples / 16000
    clips = [speechlike(0.7, 11), speechlike(window * 1.6, 12), speechlike(1.9, 13), speechlike(window * 2.3, 14)]
    assert [len(processor.layout.split_windows(len(c))) for c in clips] == [1, 2, 1, 3]
    bad = processor.tokenizer.all_special_ids + [processor.audio_token_id]
    kwargs = dict(prompt="summarize", sampling_rate=16000, max_new_tokens=6, suppress_tokens=bad)
    alone = [pipe(c, **kwargs)["generated_text"] for c in clips]
    batched = [out["generated_text"] for out in pipe(clips, batch_size=2, **kwargs)]
    assert batched == alone
    assert len(set(alone)) > 1  # the clips get different answers: the check has content


def test_answer_no_repeat_ngram_blocks_repeats_in_the_answer_but_not_the_prompts_ngrams():
    from transformers.generation.logits_process import NoRepeatNGramLogitsProcessor

    from audio_minichat.modeling_audio_minichat import AnswerNoRepeatNGram

    # prompt 5 6, answer 5 7 5: "5 7" is in the answer (7 banned after 5), "5 6" only in the prompt (6 allowed)
    ids = torch.tensor([[5, 6, 5, 7, 5]])
    ours = AnswerNoRepeatNGram(2, prompt_length=2)(ids, torch.zeros(1, 10))
    assert torch.isinf(ours[0, 7]) and not torch.isinf(ours[0, 6]) and int(torch.isinf(ours).sum()) == 1
    everything = NoRepeatNGramLogitsProcessor(2)(ids, torch.zeros(1, 10))  # transformers' own bans the prompt's too
    assert torch.isinf(everything[0, 6]) and torch.isinf(everything[0, 7])
    # through generate (a call argument or the generation config): no bigram twice in the answer
    model, processor = make_model("whisper", seed=3)
    inputs = processor(text=processor.build_prompt("summarize the the the the"))
    out = model.generate(**inputs, max_new_tokens=12, do_sample=False, answer_no_repeat_ngram_size=2)
    answer = out[0, inputs["input_ids"].shape[1]:].tolist()
    bigrams = list(zip(answer, answer[1:]))
    assert len(bigrams) == len(set(bigrams)) and len(answer) == 12
    plain = model.generate(**inputs, max_new_tokens=12, do_sample=False)[0, inputs["input_ids"].shape[1]:].tolist()
    assert len(set(zip(plain, plain[1:]))) < len(plain) - 1  # without it the tiny model loops: the check has content
    model.generation_config.answer_no_repeat_ngram_size = 2
    assert model.generate(**inputs, max_new_tokens=12, do_sample=False)[0].tolist() == out[0].tolist()
