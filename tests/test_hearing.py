"""The recognition-free study's parts: the querying-transformer front end (``qformer``), the two cacheable stages of
a front end, the audio-only LLM adapter, and placeholder counts from the one layout function."""

from __future__ import annotations

import pytest
import torch
from conftest import make_model, speechlike, tolerances

from audio_minichat import AudioMiniChatForConditionalGeneration

QFORMER = {"audio_frontend": "qformer", "frontend_config": {"qformer_queries": 12}}


@pytest.mark.parametrize("seconds,expected", [(30.0, 12), (2.5, 1), (5.0, 2), (70.0, 3 * 10)])
def test_qformer_query_count_follows_window_length(seconds, expected):
    _, processor = make_model("whisper", **QFORMER)
    # a window of f feature frames gets ceil(12 * f / 3000) queries; 70 s = 3 windows of 23.3 s (2333 frames -> 10)
    assert processor.num_audio_tokens(int(seconds * 16000)) == expected


# (a padded batch gives each qformer row what it gets alone: test_model.test_padded_batch_matches_each_sample_alone)


def test_qformer_adopts_whisper_decoder_weights_and_reads_without_decoding():
    from transformers import WhisperForConditionalGeneration

    from conftest import encoder_config

    ref, _ = make_model("whisper")
    torch.manual_seed(5)
    asr = WhisperForConditionalGeneration(encoder_config("whisper")).eval()
    model = AudioMiniChatForConditionalGeneration.from_components(ref.language_model, asr, audio_token_id=ref.config.audio_token_id,
                                                                   **QFORMER)
    decoder = asr.get_decoder().state_dict()
    mine = model.audio_frontend.qformer.state_dict()
    assert set(mine) == {k for k in decoder if not k.startswith("embed_tokens")}
    for key, value in mine.items():
        assert torch.equal(value, decoder[key]), key
    assert model.audio_frontend.qformer is not asr.get_decoder()  # a copy: training it leaves Whisper's decoder alone
    again = AudioMiniChatForConditionalGeneration.from_components(ref.language_model, asr, audio_token_id=ref.config.audio_token_id,
                                                                  **QFORMER)
    assert torch.equal(again.audio_frontend.queries, model.audio_frontend.queries)  # seeded initialisation


@pytest.mark.parametrize("config_kwargs", [{}, {"audio_frontend": "stack", "frontend_config": {"stack_factor": 3}}, QFORMER],
                         ids=lambda kw: kw.get("audio_frontend", "pool"))
def test_stage_two_of_stage_one_is_the_front_end(config_kwargs):
    model, processor = make_model("whisper", **config_kwargs)
    clips = [speechlike(1.3, 1), speechlike(31.0, 2)]
    batch = processor(text=[processor.build_prompt("a <|audio|>"), processor.build_prompt("b <|audio|>")], audio=clips,
                      sampling_rate=16000)
    fe = model.audio_frontend
    with torch.no_grad():
        whole = fe(batch["input_features"], batch["input_features_mask"], batch["audio_window_clip"])
        stage1 = fe.encoder_states(batch["input_features"], batch["input_features_mask"], batch["audio_window_clip"])
        staged = fe.embed_encoder_states(stage1, [len(c) for c in clips])
        # the model reading cached stage-1 states (padded, with lengths and sample counts) gives the same logits
        padded = torch.nn.utils.rnn.pad_sequence(stage1, batch_first=True)
        embeds, mask, _ = model._embed_encoder_states(batch["input_ids"], batch["attention_mask"], padded,
                                                      torch.tensor([f.shape[0] for f in stage1]), torch.tensor([len(c) for c in clips]))
        from_cache = model(input_ids=batch["input_ids"], inputs_embeds=embeds, attention_mask=mask).logits
        direct = model(**batch).logits
    for a, b in zip(whole.embeddings, staged.embeddings):
        torch.testing.assert_close(a, b, **tolerances(reduction=64))
    torch.testing.assert_close(from_cache, direct, **tolerances(reduction=model.config.text_config.intermediate_size))
    # the processor writes the same placeholders from sample counts alone
    counted = processor(text=[processor.build_prompt("a <|audio|>"), processor.build_prompt("b <|audio|>")],
                        audio_num_samples=[len(c) for c in clips])
    assert torch.equal(counted["input_ids"], batch["input_ids"]) and "input_features" not in counted


def test_audio_lora_leaves_text_prompts_untouched_and_changes_audio_prompts(tmp_path):
    plain, processor = make_model("whisper")
    adapted, _ = make_model("whisper", audio_lora={"r": 4, "alpha": 8, "targets": ["q_proj", "v_proj"]})
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(),
                                                  [v for k, v in adapted.state_dict().items() if not k.startswith("audio_lora.")]))
    with torch.no_grad():
        for pair in adapted.audio_lora.pairs.values():
            pair.up.weight.normal_(0, 0.5)  # a trained adapter
    text = processor(text=[processor.build_prompt("tell me a story"), processor.build_prompt("hello there, friend")])
    audio = processor(text=[processor.build_prompt("hear <|audio|>")], audio=[speechlike(1.5)], sampling_rate=16000)
    bad = processor.tokenizer.all_special_ids + [processor.audio_token_id]
    gen = dict(max_new_tokens=6, do_sample=False, suppress_tokens=bad)
    with torch.no_grad():
        assert torch.equal(adapted(**text).logits, plain(**text).logits)  # exactly: the adapter is off
        assert torch.equal(adapted.generate(**text, **gen), plain.generate(**text, **gen))
        assert not torch.allclose(adapted(**audio).logits, plain(**audio).logits)
        # generation keeps the adapter on for every answer token of an audio prompt: equal to a forward pass on the
        # generated sequence with the adapter on
        out = adapted.generate(**audio, **gen)
        assert out.shape[1] > audio["input_ids"].shape[1]
    # saved and loaded with the model (its own module: the LLM's tensor names are unchanged)
    adapted.save_pretrained(tmp_path / "m")
    loaded = AudioMiniChatForConditionalGeneration.from_pretrained(tmp_path / "m").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**audio).logits, adapted(**audio).logits)
        assert torch.equal(loaded(**text).logits, plain(**text).logits)


def test_audio_lora_rows_in_a_mixed_batch():
    adapted, processor = make_model("whisper", audio_lora={"r": 4, "alpha": 8, "targets": ["q_proj", "v_proj"]})
    with torch.no_grad():
        for pair in adapted.audio_lora.pairs.values():
            pair.up.weight.normal_(0, 0.5)
    prompts = [processor.build_prompt("hear <|audio|>"), processor.build_prompt("no audio here at all")]
    clip = speechlike(1.0)
    mixed = processor(text=prompts, audio=[clip], sampling_rate=16000, padding_side="right")
    alone_audio = processor(text=prompts[:1], audio=[clip], sampling_rate=16000)
    alone_text = processor(text=prompts[1:])
    with torch.no_grad():
        both = adapted(**mixed).logits
        a = adapted(**alone_audio).logits[0]
        t = adapted(**alone_text).logits[0]
    tol = tolerances(reduction=adapted.config.text_config.intermediate_size)
    torch.testing.assert_close(both[0, : a.shape[0]], a, **tol)
    torch.testing.assert_close(both[1, : t.shape[0]], t, **tol)


def test_bad_audio_lora_spec_is_one_clear_error():
    with pytest.raises(ValueError, match="audio_lora: no linear layer of the LLM is named"):
        make_model("whisper", audio_lora={"targets": ["nonexistent_proj"]})
    with pytest.raises(ValueError, match="unknown field"):
        make_model("whisper", audio_lora={"rank": 4})


def test_dense_target_prompts_take_their_share_and_leave_other_builds_unchanged():
    import random

    from audio_minichat.dataprep.config import DEFAULT_CONFIG
    from audio_minichat.dataprep.plan import make_prompt

    base = dict(DEFAULT_CONFIG["prompts"])
    before = [make_prompt(random.Random(i), {k: v for k, v in base.items() if not k.startswith("dense")}) for i in range(400)]
    assert [make_prompt(random.Random(i), base) for i in range(400)] == before  # dense_fraction 0: the same draws
    dense = {**base, "dense_fraction": 0.3, "instruction_fraction": 0.2}
    prompts = [make_prompt(random.Random(i), dense) for i in range(2000)]
    wanted = {d["text"] for d in base["dense_instructions"]}
    share = sum(any(w in p for w in wanted) for p in prompts) / len(prompts)
    alone = sum(p == "<|audio|>" for p in prompts) / len(prompts)
    assert abs(share - 0.3) < 0.04 and abs(alone - 0.5) < 0.04
    with pytest.raises(ValueError, match="sum to <= 1"):
        make_prompt(random.Random(0), {**base, "dense_fraction": 0.9, "instruction_fraction": 0.2})
