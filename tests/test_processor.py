"""Processor: prompts, placeholder expansion, audio input kinds, padding, labels and bad-input errors."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import CHATML, make_model, make_tokenizer, speechlike

from audio_minichat import AudioInputError, AudioMiniChatConfig, load_audio
from audio_minichat.processing_audio_minichat import MINICHAT_CHAT_TEMPLATE


@pytest.fixture(scope="module")
def tiny():
    return make_model("whisper")


def _count(inputs, processor):
    return int((inputs["input_ids"] == processor.audio_token_id).sum())


def _runs(ids, token_id):
    """Lengths of the runs of ``token_id`` in a 1-D id tensor, in order."""
    runs, current = [], 0
    for tok in ids.tolist() + [None]:
        if tok == token_id:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    return runs


@pytest.mark.parametrize("kind", ["whisper", "hubert", "wav2vec2"])
@pytest.mark.parametrize("audio_frontend", ["pool", "stack"])
def test_placeholder_count_is_exact_and_matches_model(kind, audio_frontend):
    model, processor = make_model(kind, audio_frontend=audio_frontend)
    layout = processor.layout
    for seconds in (0.05, 0.5, 1.0, 1.37, 3.01, 7.9):
        clip = speechlike(seconds, seed=3)
        inputs = processor(text=processor.build_prompt("<|audio|>"), audio=clip, sampling_rate=16000)
        # The feature extractor's real frame count equals the layout's arithmetic.
        key = "input_features" if kind == "whisper" else "input_values"  # mel features, or the waveform itself
        assert processor.audio_input_name == key and key in inputs and f"{key}_mask" in inputs
        valid = int(inputs[f"{key}_mask"].sum())
        assert valid == layout.feature_frames(max(len(clip), layout.min_samples))
        expected = processor.num_audio_tokens(len(clip))
        assert _count(inputs, processor) == expected
        with torch.no_grad():
            feats = model.get_audio_features(audio_window_clip=inputs["audio_window_clip"], **{k: inputs[k] for k in (key, f"{key}_mask")})
        assert [f.shape[0] for f in feats.embeddings] == [expected]
    other = "input_values" if key == "input_features" else "input_features"  # the other kind's name is refused
    with pytest.raises(ValueError, match=rf"^This model's encoder \({kind}\) reads {key}, not {other}: build inputs with"):
        model.get_audio_features(audio_window_clip=inputs["audio_window_clip"], **{other: inputs[key], f"{other}_mask": inputs[f"{key}_mask"]})
        assert feats.embeddings[0].shape[1] == model.config.text_config.hidden_size


def test_layout_formulas_by_method():
    base = dict(audio_config={"model_type": "whisper"}, text_config={"model_type": "llama"})
    frames = 1 * 16000 // 160  # 1 s -> 100 mel frames -> 50 encoder frames
    pool = AudioMiniChatConfig(**base)
    layout = pool.audio_layout()
    assert layout.clip_frames(16000) == (frames - 1) // 2 + 1 == 50
    assert pool.frontend_options.num_embeddings(layout, 16000) == (50 - 8 + 3) // 4 + 1 == 12  # ceil((50-8)/4)+1
    stack = AudioMiniChatConfig(**base, audio_frontend="stack", frontend_config={"stack_factor": 3})
    assert stack.frontend_options.num_embeddings(stack.audio_layout(), 16000) == 17  # ceil(50/3)
    ctc = AudioMiniChatConfig(**base, audio_frontend="ctc_pool").frontend_options
    assert ctc.num_embeddings(layout, 16000, num_spans=5) == 5
    with pytest.raises(ValueError, match="ctc_pool"):
        ctc.num_embeddings(layout, 16000)


def test_ctc_pool_gives_one_embedding_per_span_and_means_frames():
    model, processor = make_model("whisper", audio_frontend="ctc_pool")
    clip = speechlike(2.0)
    spans = [(0.0, 0.4), (0.4, 1.0), (1.2, 1.9)]
    prompt = processor.build_prompt("<|audio|>")
    inputs = processor(text=prompt, audio=clip, sampling_rate=16000, audio_spans=[spans])
    assert _count(inputs, processor) == 3
    # frames are 20 ms: 0.4 s -> frame 20
    assert inputs["audio_spans"][0].tolist() == [[0, 20], [20, 50], [60, 95]]
    with pytest.raises(ValueError, match="audio_spans"):
        processor(text=prompt, audio=clip, sampling_rate=16000)
    # the one span check (audio_spans.check_spans, as the data builder and the training collator)
    with pytest.raises(ValueError, match=r"^audio_spans\[0\]: span 0 = \[0.5, 0.2\] is empty or outside the clip\.$"):
        processor(text=prompt, audio=clip, sampling_rate=16000, audio_spans=[[(0.5, 0.2)]])


def test_text_before_after_and_several_clips(tiny):
    _, processor = tiny
    a, b = speechlike(1.0, 1), speechlike(2.0, 2)
    parts = [{"type": "text", "text": "summarize"}, {"type": "audio"}, {"type": "text", "text": "and"}, {"type": "audio"}]
    prompt = processor.build_prompt(parts)
    assert prompt == "<|im_start|>user\nsummarize\n<|audio|>\nand\n<|audio|><|im_end|>\n<|im_start|>assistant\n"
    inputs = processor(text=prompt, audio=[a, b], sampling_rate=16000)
    ids = inputs["input_ids"][0].tolist()
    n_a, n_b = processor.num_audio_tokens(len(a)), processor.num_audio_tokens(len(b))
    assert _count(inputs, processor) == n_a + n_b
    # the clips' runs are separated by the text "and"
    first = ids.index(processor.audio_token_id)
    assert ids[first : first + n_a] == [processor.audio_token_id] * n_a
    assert ids[first + n_a] != processor.audio_token_id
    assert inputs["audio_window_clip"].tolist() == [0, 1]
    # audio only, and audio before text
    only = processor(text=processor.build_prompt([{"type": "audio"}]), audio=a, sampling_rate=16000)
    assert _count(only, processor) == n_a
    after = processor.build_prompt([{"type": "audio"}, {"type": "text", "text": "summarize"}])
    assert after.index("<|audio|>") < after.index("summarize")


def test_text_version_of_prompt_replaces_placeholders_in_order(tiny):
    _, processor = tiny
    prompt = processor.build_prompt("first <|audio|> then <|audio|>")
    assert processor.build_prompt("first <|audio|> then <|audio|>", transcripts=["one two", " three "]) == (
        prompt.replace("<|audio|>", "one two", 1).replace("<|audio|>", "three", 1)
    )
    with pytest.raises(ValueError, match="2 <\\|audio\\|> placeholder\\(s\\) but 1 transcript"):
        processor.fill_placeholders(prompt, ["x"])


def test_padding_sides_and_masks(tiny):
    _, processor = tiny
    prompts = [processor.build_prompt("<|audio|>"), processor.build_prompt("hello world <|audio|>")]
    clips = [speechlike(1.0), speechlike(3.0)]
    left = processor(text=prompts, audio=clips, sampling_rate=16000)
    right = processor(text=prompts, audio=clips, sampling_rate=16000, padding_side="right")
    lengths = left["attention_mask"].sum(-1)
    assert lengths[0] < lengths[1]
    assert left["attention_mask"][0, 0] == 0 and left["attention_mask"][0, -1] == 1
    assert right["attention_mask"][0, 0] == 1 and right["attention_mask"][0, -1] == 0
    assert torch.equal(left["input_ids"][0, -int(lengths[0]) :], right["input_ids"][0, : int(lengths[0])])
    # feature mask marks each window's true length
    assert left["input_features_mask"].sum(-1).tolist() == [100, 300]


def test_responses_give_labels_on_response_tokens_only(tiny):
    _, processor = tiny
    prompts = [processor.build_prompt("<|audio|>"), processor.build_prompt("summarize <|audio|>")]
    clips = [speechlike(1.0), speechlike(1.5)]
    batch = processor(text=prompts, audio=clips, sampling_rate=16000, responses=["hello world .", "one"])
    labels, ids = batch["labels"], batch["input_ids"]
    im_end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    for row, response in enumerate(["hello world .", "one"]):
        kept = labels[row][labels[row] != -100].tolist()
        expected = processor.tokenizer(response, add_special_tokens=False)["input_ids"] + [im_end]
        assert kept == expected
        assert torch.equal(ids[row][labels[row] != -100], labels[row][labels[row] != -100])
    assert batch["attention_mask"][0, 0] == 1  # right padding by default for training


def test_tokenizer_without_chat_template_gets_minichat_format():
    model, processor = make_model("whisper", tokenizer=make_tokenizer(chat_template=None))
    assert processor.chat_template == MINICHAT_CHAT_TEMPLATE
    assert processor.build_prompt("hello <|audio|>") == "<s>[|User|] hello <|audio|></s>[|Assistant|]"
    assert processor._response_suffix("hi") == " hi</s>"


def test_audio_input_kinds(tmp_path, tiny):
    _, processor = tiny
    rate = 16000
    mono = speechlike(1.0)
    reference = load_audio(mono, rate)
    int16 = (mono * 32767).astype(np.int16)
    np.testing.assert_allclose(load_audio(int16, rate), reference, atol=1e-4)
    stereo = np.stack([mono, mono], axis=1)
    np.testing.assert_allclose(load_audio(stereo, rate), reference, atol=1e-7)
    np.testing.assert_allclose(load_audio(stereo.T.copy(), rate), reference, atol=1e-7)
    np.testing.assert_allclose(load_audio(torch.from_numpy(mono), rate), reference)
    np.testing.assert_allclose(load_audio({"array": mono, "sampling_rate": rate}), reference)
    # other sample rates are resampled to 16 kHz
    at_8k = load_audio(mono[::2].copy(), 8000)
    assert at_8k.shape[0] == 16000
    at_44k = load_audio(np.zeros(44100, dtype=np.float32), 44100)
    assert at_44k.shape[0] == 16000
    # files: stereo PCM16 wav
    path = tmp_path / "clip.wav"
    sf.write(path, np.stack([mono, mono], 1)[::1], rate, subtype="PCM_16")
    np.testing.assert_allclose(load_audio(str(path)), reference, atol=1e-4)
    inputs = processor(text=processor.build_prompt("<|audio|>"), audio=str(path))
    assert _count(inputs, processor) == processor.num_audio_tokens(16000)


def test_long_clip_is_split_into_balanced_windows(tiny):
    _, processor = tiny
    layout = processor.layout
    assert layout.split_windows(int(65 * 16000)) == [(0, 346667), (346667, 693334), (693334, 1040000)]
    clip = speechlike(65.0)
    inputs = processor(text=processor.build_prompt("<|audio|>"), audio=clip, sampling_rate=16000)
    assert inputs["input_features"].shape[0] == 3
    assert inputs["audio_window_clip"].tolist() == [0, 0, 0]
    assert _count(inputs, processor) == processor.num_audio_tokens(len(clip))


# ---- bad input: clear messages ----------------------------------------------------------------------
def test_empty_audio_error(tiny):
    _, processor = tiny
    with pytest.raises(AudioInputError, match="audio clip 0: the audio \\(array\\) is empty"):
        processor(text=processor.build_prompt("<|audio|>"), audio=np.zeros(0, dtype=np.float32), sampling_rate=16000)


def test_nan_audio_error(tiny):
    _, processor = tiny
    bad = np.full(16000, np.nan, dtype=np.float32)
    with pytest.raises(AudioInputError, match="16000 of 16000 samples that are NaN or infinite"):
        processor(text=processor.build_prompt("<|audio|>"), audio=bad, sampling_rate=16000)
    inf = speechlike(1.0)
    inf[5] = np.inf
    with pytest.raises(AudioInputError, match="1 of 16000 samples"):
        load_audio(inf, 16000)


def test_unreadable_and_missing_file_errors(tmp_path, tiny):
    _, processor = tiny
    fake = tmp_path / "notes.wav"
    fake.write_text("this is not audio")
    with pytest.raises(AudioInputError, match=r"cannot read audio file '.*notes\.wav'"):
        processor(text=processor.build_prompt("<|audio|>"), audio=str(fake))
    with pytest.raises(AudioInputError, match="does not exist"):
        load_audio(str(tmp_path / "missing.wav"))
    with pytest.raises(AudioInputError, match="needs its sampling_rate"):
        load_audio(speechlike(0.5))


def test_placeholder_count_mismatch_error(tiny):
    _, processor = tiny
    prompt = processor.build_prompt("<|audio|> and <|audio|>")
    with pytest.raises(ValueError, match=r"2 <\|audio\|> placeholder\(s\) \(prompt 0: 2\) but 1 audio clip"):
        processor(text=prompt, audio=[speechlike(1.0)], sampling_rate=16000)
    with pytest.raises(ValueError, match=r"0 <\|audio\|> placeholder"):
        processor(text=processor.build_prompt("hello"), audio=[speechlike(1.0)], sampling_rate=16000)


def test_prompt_longer_than_context_error():
    _, processor = make_model("whisper")
    processor.max_context_length = 50
    with pytest.raises(ValueError, match=r"Prompt 0 is \d+ tokens long \(audio included\) but the LLM's context is 50"):
        processor(text=processor.build_prompt("<|audio|>"), audio=speechlike(20.0), sampling_rate=16000)


def test_processor_save_load_keeps_layout_and_template(tmp_path, tiny):
    _, processor = tiny
    processor.save_pretrained(tmp_path)
    from audio_minichat import AudioMiniChatProcessor

    loaded = AudioMiniChatProcessor.from_pretrained(tmp_path)
    assert loaded.layout == processor.layout
    assert loaded.audio_token_id == processor.audio_token_id
    assert loaded.build_prompt("x <|audio|>") == processor.build_prompt("x <|audio|>")
    assert CHATML == loaded.chat_template


# ---- apply_chat_template (ProcessorMixin conventions) ---------------------------------------------------------
TEMPLATES = {"chatml": CHATML, "minichat": None}


@pytest.fixture(scope="module", params=sorted(TEMPLATES))
def templated(request):
    """(model, processor) with a ChatML tokenizer, or one without a template (the processor's MiniChat format)."""
    return make_model("whisper", tokenizer=make_tokenizer(chat_template=TEMPLATES[request.param]))


def _strip_sources(content):
    return [{"type": part["type"], **({"text": part["text"]} if part["type"] == "text" else {})} for part in content]


def test_chat_template_renders_the_build_prompt_strings(tmp_path, templated):
    _, processor = templated
    path = tmp_path / "a.wav"
    sf.write(path, speechlike(1.0), 16000)
    parts = [
        {"type": "text", "text": "summarize"},
        {"type": "audio", "path": str(path)},
        {"type": "text", "text": "and"},
        {"type": "audio", "audio": speechlike(0.5), "sampling_rate": 16000},
    ]
    messages = [{"role": "user", "content": parts}]
    rendered = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    # the exact strings the shipped model was trained on
    expected = {
        CHATML: "<|im_start|>user\nsummarize\n<|audio|>\nand\n<|audio|><|im_end|>\n<|im_start|>assistant\n",
        MINICHAT_CHAT_TEMPLATE: "<s>[|User|] summarize\n<|audio|>\nand\n<|audio|></s>[|Assistant|]",
    }[processor.chat_template]
    assert rendered == expected
    assert rendered == processor.build_prompt(parts) == processor.build_prompt(_strip_sources(parts))
    assert rendered == processor.build_prompt("summarize\n<|audio|>\nand\n<|audio|>")
    # add_generation_prompt is honoured (ProcessorMixin's default, False, leaves the assistant header out)
    without = processor.apply_chat_template(messages, tokenize=False)
    assert rendered.startswith(without) and rendered != without
    # system prompt and several turns, as build_prompt renders them; the caller's messages are left as they were
    turns = [
        {"role": "system", "content": "be short"},
        {"role": "user", "content": [{"type": "audio", "url": str(path)}, {"type": "text", "text": "what is it"}]},
        {"role": "assistant", "content": "one"},
        {"role": "user", "content": [{"type": "text", "text": "and this"}, {"type": "audio", "path": str(path)}]},
    ]
    assert processor.apply_chat_template(turns, add_generation_prompt=True) == processor.build_prompt(turns)
    assert processor.build_prompt(parts, system="be short") == processor.apply_chat_template(
        [{"role": "system", "content": "be short"}] + messages, add_generation_prompt=True
    )
    assert isinstance(turns[1]["content"], list) and turns[1]["content"][0] == {"type": "audio", "url": str(path)}
    # the text version (transcripts) still fills the same prompt
    assert processor.build_prompt(parts, transcripts=["one", "two"]) == expected.replace("<|audio|>", "one", 1).replace(
        "<|audio|>", "two", 1
    )


def test_chat_template_tokenized_equals_direct_call_with_exact_placeholder_counts(tmp_path, templated):
    _, processor = templated
    rate = 16000
    clips = {"short": speechlike(0.5, 1), "mid": speechlike(3.0, 2), "long": speechlike(31.0, 3), "at_8k": speechlike(2.0, 4, rate=8000)}
    paths = {}
    for name in ("short", "long"):
        paths[name] = tmp_path / f"{name}.wav"
        sf.write(paths[name], clips[name], rate)
    parts = [
        {"type": "text", "text": "summarize"},
        {"type": "audio", "path": str(paths["short"])},
        {"type": "text", "text": "then"},  # (the test tokenizer drops newlines: text keeps the clips' runs apart)
        {"type": "audio", "audio": clips["mid"]},  # an array with no sampling_rate is at the model's rate
        {"type": "text", "text": "and"},
        {"type": "audio", "url": paths["long"].as_uri()},  # file:// URL (local only)
        {"type": "text", "text": "with"},
        {"type": "audio", "audio": clips["at_8k"], "sampling_rate": 8000},
    ]
    messages = [{"role": "user", "content": parts}]
    prompt = processor.build_prompt(_strip_sources(parts))
    direct = processor(
        text=prompt,
        audio=[str(paths["short"]), clips["mid"], str(paths["long"]), {"array": clips["at_8k"], "sampling_rate": 8000}],
        sampling_rate=rate,
    )
    for return_tensors in ("pt", "auto"):
        inputs = processor.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors=return_tensors
        )
        assert set(inputs) == set(direct) == {
            "input_ids", "attention_mask", "input_features", "input_features_mask", "audio_window_clip"
        }
        for key in direct:
            assert torch.equal(inputs[key], direct[key]), key
    lengths = [len(clips["short"]), len(clips["mid"]), len(clips["long"]), 2 * len(clips["at_8k"])]
    expected = [processor.num_audio_tokens(n) for n in lengths]
    assert len(set(expected)) == 4
    assert _runs(inputs["input_ids"][0], processor.audio_token_id) == expected
    assert inputs["audio_window_clip"].tolist() == [0, 1, 2, 2, 3]  # the 31 s clip has two windows
    # tokenize=True without return_dict gives the input ids
    ids = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    assert torch.equal(ids, direct["input_ids"])


def test_chat_template_batch_of_conversations(templated):
    _, processor = templated
    a, b, c = speechlike(1.0, 1), speechlike(4.0, 2), speechlike(2.5, 3)
    one = [{"role": "user", "content": [{"type": "audio", "audio": a}, {"type": "text", "text": "summarize"}]}]
    two = [
        {"role": "system", "content": "be short"},
        {"role": "user", "content": [{"type": "text", "text": "hello"}, {"type": "audio", "audio": b},
                                     {"type": "text", "text": "and"}, {"type": "audio", "audio": c}]},
    ]
    prompts = processor.apply_chat_template([one, two], add_generation_prompt=True)
    assert prompts == [processor.build_prompt(one), processor.build_prompt(two)]
    batch = processor.apply_chat_template([one, two], add_generation_prompt=True, tokenize=True, return_dict=True)
    direct = processor(text=prompts, audio=[a, b, c], sampling_rate=16000)
    for key in direct:
        assert torch.equal(batch[key], direct[key]), key
    token = processor.audio_token_id
    assert _runs(batch["input_ids"][0], token) == [processor.num_audio_tokens(len(a))]
    assert _runs(batch["input_ids"][1], token) == [processor.num_audio_tokens(len(b)), processor.num_audio_tokens(len(c))]
    assert batch["audio_window_clip"].tolist() == [0, 1, 2]
    # left padding for generation by default; right padding on request
    short = int(batch["attention_mask"].sum(-1).argmin())
    assert batch["attention_mask"][short, 0] == 0 and batch["attention_mask"][short, -1] == 1
    right = processor.apply_chat_template(
        [one, two], add_generation_prompt=True, tokenize=True, return_dict=True, processor_kwargs={"padding_side": "right"}
    )
    assert right["attention_mask"][short, 0] == 1 and right["attention_mask"][short, -1] == 0


def test_chat_template_missing_or_remote_audio_errors(tiny):
    _, processor = tiny
    conversation = [
        {"role": "user", "content": [{"type": "text", "text": "hello"}, {"type": "audio", "audio": speechlike(1.0)}]},
        {"role": "assistant", "content": "hi"},
        {"role": "user", "content": [{"type": "text", "text": "and"}, {"type": "audio", "sampling_rate": 16000}]},
    ]
    with pytest.raises(ValueError, match=r"^message 2 \(user\), content part 1: the audio part has no audio; give it under 'path'"):
        processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=True)
    batch = [[conversation[0]], conversation]
    with pytest.raises(ValueError, match=r"^conversation 1, message 2 \(user\), content part 1: the audio part has no audio"):
        processor.apply_chat_template(batch, add_generation_prompt=True, tokenize=True, return_dict=True)
    # rendering alone needs no audio
    assert processor.apply_chat_template(conversation, add_generation_prompt=True).count("<|audio|>") == 2
    remote = [{"role": "user", "content": [{"type": "audio", "url": "https://example.com/a.wav"}]}]
    with pytest.raises(AudioInputError, match=r"message 0 \(user\), content part 0: url 'https://example.com/a.wav' is not a local file"):
        processor.apply_chat_template(remote, tokenize=True, return_dict=True)
    bad = [{"role": "user", "content": [{"type": "audio", "audio": np.zeros(0, dtype=np.float32)}]}]
    with pytest.raises(AudioInputError, match=r"message 0 \(user\), content part 0: the audio \(array\) is empty"):
        processor.apply_chat_template(bad, tokenize=True, return_dict=True)
    with pytest.raises(ValueError, match=r"message 0 \(user\), content part 0: unsupported content part type 'image'"):
        processor.apply_chat_template([{"role": "user", "content": [{"type": "image", "url": "x.png"}]}])


def test_generation_from_chat_template_inputs_equals_direct_inputs(templated):
    model, processor = templated
    a, b = speechlike(1.5, 5), speechlike(0.7, 6)
    conversations = [
        [{"role": "user", "content": [{"type": "text", "text": "summarize"}, {"type": "audio", "audio": a}]}],
        [{"role": "user", "content": [{"type": "audio", "audio": b}, {"type": "text", "text": "what"},
                                      {"type": "audio", "audio": a}]}],
    ]
    from_template = processor.apply_chat_template(
        conversations, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    prompts = [processor.build_prompt(_strip_sources(conv[0]["content"])) for conv in conversations]
    direct = processor(text=prompts, audio=[a, b, a], sampling_rate=16000)
    with torch.no_grad():
        out_template = model.generate(**from_template, do_sample=False, max_new_tokens=5)
        out_direct = model.generate(**direct, do_sample=False, max_new_tokens=5)
    assert out_template.shape[-1] > 0
    assert torch.equal(out_template, out_direct)


def test_transformers_usual_call_arguments(tiny):
    _, processor = tiny
    clip, prompt = speechlike(1.0, 1), processor.build_prompt("summarize <|audio|>")
    plain = processor(text=prompt, audio=clip, sampling_rate=16000)
    for kwargs in ({"padding": True}, {"padding": "longest", "return_tensors": "pt"}, {"truncation": False},
                   {"return_attention_mask": True}, {"common_kwargs": {"return_tensors": "pt"}, "text_kwargs": {"padding": True}}):
        same = processor(text=prompt, audio=clip, sampling_rate=16000, **kwargs)
        assert same.keys() == plain.keys() and all(torch.equal(same[k], plain[k]) for k in plain), kwargs
    grouped = processor(text=prompt, audio=clip, audio_kwargs={"sampling_rate": 16000})  # the rate in its group
    assert torch.equal(grouped["input_features"], plain["input_features"])
    with pytest.raises(ValueError, match=r"^padding='max_length': AudioMiniChatProcessor pads each batch to its longest prompt"):
        processor(text=prompt, audio=clip, sampling_rate=16000, padding="max_length")
    with pytest.raises(ValueError, match=r"^truncation: AudioMiniChatProcessor never truncates a prompt"):
        processor(text=prompt, audio=clip, sampling_rate=16000, truncation=True)
    with pytest.raises(ValueError, match=r"^sampling_rate is given twice with different values \(16000 and audio_kwargs's 8000\)\.$"):
        processor(text=prompt, audio=clip, text_kwargs={"sampling_rate": 16000}, audio_kwargs={"sampling_rate": 8000})
    with pytest.raises(TypeError, match=r"^Unexpected argument\(s\) \['max_lenght'\] for AudioMiniChatProcessor\.$"):
        processor(text=prompt, audio=clip, sampling_rate=16000, max_lenght=10)


def test_a_hub_id_loads_the_cascade_tokenizer_too(tmp_path, tiny):
    """``from_pretrained(hub id)``: the asr_tokenizer subfolder comes from the repository as the rest does (here a
    local hub cache, offline), and a repository without one gives no cascade tokenizer."""
    import json
    import os
    import subprocess
    import sys

    model, processor = tiny
    hub = tmp_path / "hub"
    for name, asr in (("with", make_tokenizer()), ("without", None)):
        snapshot = hub / f"models--local--{name}" / "snapshots" / ("0" * 40)
        processor.asr_tokenizer = asr
        processor.save_pretrained(snapshot)
        model.config.save_pretrained(snapshot)
        (hub / f"models--local--{name}" / "refs").mkdir()
        (hub / f"models--local--{name}" / "refs" / "main").write_text("0" * 40)
        # the hub answers 404 for a subfolder's config.json; its cache records that as a .no_exist entry
        missing = hub / f"models--local--{name}" / ".no_exist" / ("0" * 40) / "asr_tokenizer" / "config.json"
        missing.parent.mkdir(parents=True)
        missing.touch()
    processor.asr_tokenizer = None
    code = ("import json; from audio_minichat import AudioMiniChatProcessor as P; "
            "print(json.dumps([None if p.asr_tokenizer is None else len(p.asr_tokenizer) "
            "for p in (P.from_pretrained('local/with'), P.from_pretrained('local/without'))]))")
    env = {**os.environ, "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [len(make_tokenizer()), None]
