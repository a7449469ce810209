"""audio_frontend="posterior": pooled encoder frames -> a head's posterior over the LLM's vocabulary -> the expected
LLM input embedding under it (``softmax(head(frames) / T) @ E``), in one pass.

Tiny random encoders (Whisper, HuBERT, wav2vec2) + Llama: the options round-trip and are checked, the count is the
pool arithmetic (and the pooled states are pool's), every embedding is the recomputed posterior's mixture of the
LLM's embeddings (rows sum to 1, top-k keeps exactly k), a padded batch gives each clip what it gets alone, and
gradients reach the head and the encoder but never the LLM's embeddings. (Save / load with remote code and the
pipeline, and the padded-batch logits, are tested for every front end in test_model.py.)
"""

from __future__ import annotations

import pytest
import torch
from conftest import make_model, speechlike, tolerances
from transformers import WhisperForConditionalGeneration

from audio_minichat import AudioMiniChatConfig, AudioMiniChatForConditionalGeneration
from audio_minichat.frontend_pool_config import PoolConfig
from audio_minichat.frontend_posterior_config import PosteriorConfig

KINDS = ("whisper", "hubert", "wav2vec2")


def posterior_model(kind: str = "whisper", **options):
    return make_model(kind, audio_frontend="posterior", frontend_config=options)


def audio_batch(processor, seconds=(2.3, 5.1, 0.7)):
    clips = [speechlike(s, i + 1) for i, s in enumerate(seconds)]
    prompts = [processor.build_prompt("summarize <|audio|>")] * len(clips)
    return clips, processor(text=prompts, audio=clips, sampling_rate=16000)


def frontend_inputs(model, batch):
    return model._audio_inputs(batch.get("input_features"), batch.get("input_features_mask"), batch.get("input_values"),
                               batch.get("input_values_mask")) + (batch["audio_window_clip"],)


def test_options_round_trip_and_refuse_bad_values(tmp_path):
    options = {"posterior_kernel": 6, "posterior_stride": 3, "posterior_top_k": 4, "posterior_temperature": 0.5}
    model, _ = posterior_model(**options)
    model.config.save_pretrained(tmp_path)
    loaded = AudioMiniChatConfig.from_pretrained(tmp_path)
    assert loaded.audio_frontend == "posterior"
    assert loaded.frontend_options == PosteriorConfig(posterior_vocab="llm", **options)
    assert loaded.frontend_config == {**options, "posterior_vocab": "llm"}
    assert PosteriorConfig() == PosteriorConfig(8, 4, "llm", 0, 1.0)
    bad = [({"posterior_vocab": "asr"}, "audio_frontend='posterior': posterior_vocab must be one of ('llm',), got 'asr'."),
           ({"posterior_top_k": -1}, "audio_frontend='posterior': posterior_top_k must be an integer >= 0 (0: all tokens), got -1."),
           ({"posterior_temperature": 0}, "audio_frontend='posterior': posterior_temperature must be a positive number, got 0."),
           ({"posterior_stride": 0}, "audio_frontend='posterior': posterior_stride must be a positive integer, got 0."),
           ({"pool_kernel": 8}, "frontend_config of audio_frontend='posterior': unknown option(s) ['pool_kernel']; its options are "
                                "['posterior_kernel', 'posterior_stride', 'posterior_vocab', 'posterior_top_k', 'posterior_temperature'].")]
    for given, message in bad:
        with pytest.raises(ValueError) as err:
            PosteriorConfig.from_dict(given)
        assert str(err.value) == message


@pytest.mark.parametrize("kind", KINDS)
def test_count_and_pooled_states_are_pools(kind):
    """As many embeddings as placeholders, by pool's arithmetic; the pooled states equal pool's on the same encoder."""
    model, processor = posterior_model(kind, posterior_kernel=6, posterior_stride=3)
    pool, _ = make_model(kind, audio_frontend="pool", frontend_config={"pool_kernel": 6, "pool_stride": 3})
    model.audio_frontend.encoder.load_state_dict(pool.audio_frontend.encoder.state_dict())
    clips, batch = audio_batch(processor)
    layout = model.audio_frontend.layout
    counts = [processor.num_audio_tokens(len(c)) for c in clips]
    assert counts == [PoolConfig(6, 3).num_embeddings(layout, len(c)) for c in clips]
    assert [int(n) for n in (batch["input_ids"] == model.config.audio_token_id).sum(-1)] == counts
    with torch.no_grad():
        out = model.get_audio_features(**{k: batch[k] for k in batch if k not in ("input_ids", "attention_mask")})
        ours = model.audio_frontend.encoder_states(*frontend_inputs(model, batch))
        pools = pool.audio_frontend.encoder_states(*frontend_inputs(pool, batch))
        logits = model(**batch).logits
    assert [e.shape[0] for e in out.embeddings] == counts and all(bool(m.all()) for m in out.fill_mask)
    for a, b in zip(ours, pools):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("kind,top_k,temperature", [("whisper", 0, 1.0), ("hubert", 3, 0.5), ("wav2vec2", 7, 2.0)])
def test_each_embedding_is_the_posterior_mixture_of_the_llm_embeddings(kind, top_k, temperature):
    model, processor = posterior_model(kind, posterior_top_k=top_k, posterior_temperature=temperature)
    _, batch = audio_batch(processor)
    frontend, table = model.audio_frontend, model.get_input_embeddings().weight
    vocab = model.config.text_config.vocab_size
    with torch.no_grad():
        out = frontend(*frontend_inputs(model, batch), token_table=table)
        states = frontend.encoder_states(*frontend_inputs(model, batch))
        for embeddings, clip_states in zip(out.embeddings, states):
            scores = frontend.projector(clip_states) / temperature  # recomputed by hand, one clip alone
            assert model.config.audio_token_id >= vocab  # the tiny LLM has no row for the placeholder: nothing masked
            if top_k:
                kth = scores.topk(top_k, dim=-1).values[:, -1:]
                scores = scores.masked_fill(scores < kth, float("-inf"))
            probs = torch.softmax(scores, dim=-1)
            assert probs.shape == (embeddings.shape[0], vocab)
            torch.testing.assert_close(frontend.probabilities(clip_states), probs, **tolerances(reduction=16))
            torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[0]), **tolerances(reduction=vocab))
            assert bool((probs >= 0).all())
            assert (probs > 0).sum(-1).tolist() == [top_k or vocab] * probs.shape[0]
            torch.testing.assert_close(embeddings, probs @ table, **tolerances(reduction=vocab))
            # in the convex hull: inside the box of the LLM's embeddings, coordinate by coordinate
            assert bool((embeddings <= table.max(0).values + 1e-6).all() and (embeddings >= table.min(0).values - 1e-6).all())
        # an LLM whose table has a row for the placeholder: that row never gets weight
        model.config.audio_token_id = 7
        probs = frontend.probabilities(states[0])
        assert probs[:, 7].tolist() == [0.0] * probs.shape[0]
        assert (probs > 0).sum(-1).tolist() == [top_k or vocab - 1] * probs.shape[0]
        torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[0]), **tolerances(reduction=vocab))


@pytest.mark.parametrize("kind", KINDS)
def test_a_padded_batch_gives_each_clip_its_embeddings_alone(kind):
    model, processor = posterior_model(kind, posterior_top_k=5)
    clips, batch = audio_batch(processor)
    table = model.get_input_embeddings().weight
    with torch.no_grad():
        together = model.audio_frontend(*frontend_inputs(model, batch), token_table=table).embeddings
        for clip, batched in zip(clips, together):
            single = processor(text=processor.build_prompt("summarize <|audio|>"), audio=clip, sampling_rate=16000)
            alone = model.audio_frontend(*frontend_inputs(model, single), token_table=table).embeddings[0]
            torch.testing.assert_close(batched, alone, **tolerances(reduction=model.config.text_config.vocab_size))


def test_gradients_reach_the_head_and_encoder_never_the_llm_embeddings():
    model, processor = posterior_model("whisper", posterior_top_k=4)
    model.train()
    _, batch = audio_batch(processor, (1.5, 2.5))
    table = model.get_input_embeddings().weight
    assert table.requires_grad  # not frozen here: the front end itself must not reach it
    out = model.audio_frontend(*frontend_inputs(model, batch), token_table=table)
    torch.cat(out.embeddings).pow(2).sum().backward()
    head = model.audio_frontend.projector.net[0]
    assert head.weight.grad is not None and float(head.weight.grad.abs().sum()) > 0
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.audio_frontend.encoder.parameters())
    assert table.grad is None
    assert list(model.audio_frontend.adapter_parameters()) == list(model.audio_frontend.projector.parameters())


def test_the_fresh_head_is_small_and_untrained_and_stage_two_needs_the_table():
    model, processor = posterior_model("whisper")
    asr = WhisperForConditionalGeneration(model.config.audio_config)
    built = AudioMiniChatForConditionalGeneration.from_components(model.language_model, asr, model.config.audio_token_id,
                                                                 audio_frontend="posterior")
    head = built.audio_frontend.projector.net[0]
    assert head.out_features == model.config.text_config.vocab_size
    assert built.audio_frontend.encoder is asr.get_encoder()
    with torch.no_grad():  # initializer_range 0.02: a near-uniform posterior until trained
        assert abs(float(head.weight.std()) - 0.02) < 0.005 and float(head.bias.abs().max()) == 0.0
    assert model.audio_frontend.cacheable is False  # the cached training path does not pass the LLM's table
    _, batch = audio_batch(processor, (1.0,))
    states = model.audio_frontend.encoder_states(*frontend_inputs(model, batch))
    with pytest.raises(ValueError) as err:
        model.audio_frontend.embed_encoder_states(states)
    assert str(err.value) == "audio_frontend='posterior' mixes the LLM's input embeddings: it needs token_table."
