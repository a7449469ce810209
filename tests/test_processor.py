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


@pytest.mark.parametrize("kind", ["whisper", "hubert", "wav2vec2"])
@pytest.mark.parametrize("downsample", ["pool", "stack"])
def test_placeholder_count_is_exact_and_matches_model(kind, downsample):
    model, processor = make_model(kind, downsample=downsample)
    layout = processor.layout
    for seconds in (0.05, 0.5, 1.0, 1.37, 3.01, 7.9):
        clip = speechlike(seconds, seed=3)
        inputs = processor(text=processor.build_prompt("<|audio|>"), audio=clip, sampling_rate=16000)
        # The feature extractor's real frame count equals the layout's arithmetic.
        valid = int(inputs["input_features_mask"].sum())
        assert valid == layout.feature_frames(max(len(clip), layout.min_samples))
        expected = processor.num_audio_tokens(len(clip))
        assert _count(inputs, processor) == expected
        with torch.no_grad():
            feats = model.get_audio_features(
                inputs["input_features"], inputs["input_features_mask"], inputs["audio_window_clip"]
            )
        assert [f.shape[0] for f in feats] == [expected]
        assert feats[0].shape[1] == model.config.text_config.hidden_size


def test_layout_formulas_by_method():
    base = dict(audio_config={"model_type": "whisper"}, text_config={"model_type": "llama"})
    frames = 1 * 16000 // 160  # 1 s -> 100 mel frames -> 50 encoder frames
    pool = AudioMiniChatConfig(**base).audio_layout()
    assert pool.clip_frames(16000) == (frames - 1) // 2 + 1 == 50
    assert pool.num_embeddings(16000) == (50 - 8 + 3) // 4 + 1 == 12  # ceil((50-8)/4)+1
    stack = AudioMiniChatConfig(**base, downsample="stack", stack_factor=3).audio_layout()
    assert stack.num_embeddings(16000) == 17  # ceil(50/3)
    ctc = AudioMiniChatConfig(**base, downsample="ctc_pool").audio_layout()
    assert ctc.num_embeddings(16000, num_spans=5) == 5
    with pytest.raises(ValueError, match="ctc_pool"):
        ctc.num_embeddings(16000)


def test_ctc_pool_gives_one_embedding_per_span_and_means_frames():
    model, processor = make_model("whisper", downsample="ctc_pool")
    clip = speechlike(2.0)
    spans = [(0.0, 0.4), (0.4, 1.0), (1.2, 1.9)]
    prompt = processor.build_prompt("<|audio|>")
    inputs = processor(text=prompt, audio=clip, sampling_rate=16000, audio_spans=[spans])
    assert _count(inputs, processor) == 3
    # frames are 20 ms: 0.4 s -> frame 20
    assert inputs["audio_spans"][0].tolist() == [[0, 20], [20, 50], [60, 95]]
    with pytest.raises(ValueError, match="audio_spans"):
        processor(text=prompt, audio=clip, sampling_rate=16000)
    with pytest.raises(ValueError, match=r"audio_spans\[0\]\[0\]"):
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
