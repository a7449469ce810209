"""audio_frontend="posterior": pooled encoder frames -> a head's posterior over the LLM's vocabulary -> the expected
LLM input embedding under it (``softmax(head(frames) / T) @ E``), in one pass.

Tiny random encoders (Whisper, HuBERT, wav2vec2) + Llama: the options round-trip and are checked, the count is the
pool arithmetic (and the pooled states are pool's), every embedding is the recomputed posterior's mixture of the
LLM's embeddings (rows sum to 1, top-k keeps exactly k), a padded batch gives each clip what it gets alone, and
gradients reach the head and the encoder but never the LLM's embeddings. (Save / load with remote code and the
pipeline, and the padded-batch logits, are tested for every front end in test_model.py.)
"""

from __future__ import annotations

import math

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


def assert_each_clip_alone(model, processor):
    """Each clip's embeddings in a padded batch equal its embeddings alone."""
    clips, batch = audio_batch(processor)
    table = model.get_input_embeddings().weight
    with torch.no_grad():
        together = model.audio_frontend(*frontend_inputs(model, batch), token_table=table).embeddings
        for clip, batched in zip(clips, together):
            single = processor(text=processor.build_prompt("summarize <|audio|>"), audio=clip, sampling_rate=16000)
            alone = model.audio_frontend(*frontend_inputs(model, single), token_table=table).embeddings[0]
            torch.testing.assert_close(batched, alone, **tolerances(reduction=model.config.text_config.vocab_size))


def test_options_round_trip_and_refuse_bad_values(tmp_path):
    options = {"posterior_kernel": 6, "posterior_stride": 3, "posterior_top_k": 4, "posterior_temperature": 0.5}
    model, _ = posterior_model(**options)
    model.config.save_pretrained(tmp_path)
    loaded = AudioMiniChatConfig.from_pretrained(tmp_path)
    assert loaded.audio_frontend == "posterior"
    defaults = {"posterior_vocab": "llm", "posterior_head": "vocab", "posterior_blank": False, "posterior_keep": 0.5,
                "posterior_merge": 0.5, "posterior_slots_per_second": 8.0}
    assert loaded.frontend_options == PosteriorConfig(**{**defaults, **options})
    assert loaded.frontend_config == {**options, **defaults}
    assert PosteriorConfig() == PosteriorConfig(8, 4, "llm", 0, 1.0, "vocab", False, 0.5, 0.5, 8.0)
    bad = [({"posterior_vocab": "asr"}, "audio_frontend='posterior': posterior_vocab must be one of ('llm',), got 'asr'."),
           ({"posterior_top_k": -1}, "audio_frontend='posterior': posterior_top_k must be an integer >= 0 (0: all tokens), got -1."),
           ({"posterior_temperature": 0}, "audio_frontend='posterior': posterior_temperature must be a positive number, got 0."),
           ({"posterior_stride": 0}, "audio_frontend='posterior': posterior_stride must be a positive integer, got 0."),
           ({"pool_kernel": 8}, "frontend_config of audio_frontend='posterior': unknown option(s) ['pool_kernel']; its options are "
                                "['posterior_kernel', 'posterior_stride', 'posterior_vocab', 'posterior_top_k', 'posterior_temperature', "
                                "'posterior_head', 'posterior_blank', 'posterior_keep', 'posterior_merge', 'posterior_slots_per_second']."),
           ({"posterior_head": "free"}, "audio_frontend='posterior': posterior_head must be one of ('vocab', 'tied'), got 'free'."),
           ({"posterior_keep": 0}, "audio_frontend='posterior': posterior_keep must be a number in (0, 1], got 0."),
           ({"posterior_blank": "yes"}, "audio_frontend='posterior': posterior_blank must be true or false, got 'yes'."),
           ({"posterior_slots_per_second": -1}, "audio_frontend='posterior': posterior_slots_per_second must be a positive number, got -1.")]
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
            torch.testing.assert_close(frontend.probabilities(clip_states)[0], probs, **tolerances(reduction=16))
            torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[0]), **tolerances(reduction=vocab))
            assert bool((probs >= 0).all())
            assert (probs > 0).sum(-1).tolist() == [top_k or vocab] * probs.shape[0]
            torch.testing.assert_close(embeddings, probs @ table, **tolerances(reduction=vocab))
            # in the convex hull: inside the box of the LLM's embeddings, coordinate by coordinate
            assert bool((embeddings <= table.max(0).values + 1e-6).all() and (embeddings >= table.min(0).values - 1e-6).all())
        # an LLM whose table has a row for the placeholder: that row never gets weight
        model.config.audio_token_id = 7
        probs, blank = frontend.probabilities(states[0])
        assert blank is None
        assert probs[:, 7].tolist() == [0.0] * probs.shape[0]
        assert (probs > 0).sum(-1).tolist() == [top_k or vocab - 1] * probs.shape[0]
        torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[0]), **tolerances(reduction=vocab))


@pytest.mark.parametrize("kind", KINDS)
def test_a_padded_batch_gives_each_clip_its_embeddings_alone(kind):
    model, processor = posterior_model(kind, posterior_top_k=5)
    assert_each_clip_alone(model, processor)


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


# ---- the CTC posterior: tied head, blank class, keep / merge rules (training/align_posterior.py trains it) ----------
CTC = {"posterior_head": "tied", "posterior_blank": True}


def test_the_tied_head_scores_tokens_by_the_llms_embeddings_plus_a_bias():
    model, processor = posterior_model("whisper", **CTC)
    frontend, table = model.audio_frontend, model.get_input_embeddings().weight
    vocab = model.config.text_config.vocab_size
    _, batch = audio_batch(processor, (1.5,))
    with torch.no_grad():
        frontend.projector.token_bias.normal_()
        frontend.projector.blank.weight.normal_()
        states = frontend.encoder_states(*frontend_inputs(model, batch))[0]
        scores = frontend.scores(states, table)
        hidden = frontend.projector(states)
    assert scores.shape == (states.shape[0], vocab + 1)  # the blank last
    torch.testing.assert_close(scores[:, :vocab], hidden @ table[:vocab].T + frontend.projector.token_bias,
                               **tolerances(reduction=hidden.shape[-1]))
    torch.testing.assert_close(scores[:, vocab], frontend.projector.blank(hidden).squeeze(-1), **tolerances(reduction=hidden.shape[-1]))
    # the LLM's table is an input, never trained: gradients reach the head only
    model.train()
    table = model.get_input_embeddings().weight
    frontend.scores(frontend.encoder_states(*frontend_inputs(model, batch))[0], table).logsumexp(-1).sum().backward()
    assert table.grad is None
    assert all(p.grad is not None for p in frontend.adapter_parameters())
    with pytest.raises(ValueError) as err:
        frontend.projector.score(states, None)
    assert str(err.value) == "posterior_head='tied' scores tokens by the LLM's input embeddings: it needs token_table."


def test_kept_positions_drop_blanks_merge_neighbours_and_keep_the_least_blank_when_over():
    model, _ = posterior_model("whisper", **CTC, posterior_keep=0.5, posterior_merge=0.5)
    frontend = model.audio_frontend
    a, b, c = torch.eye(4)[0], torch.eye(4)[1], torch.tensor([0.5, 0.5, 0.0, 0.0])
    probs = torch.stack([a, a, b, b, a, c, b])
    blank = torch.tensor([0.1, 0.2, 0.9, 0.3, 0.4, 0.45, 0.05])
    # position 2 is blank; 0-1 overlap fully -> one; 3 (b) after a dropped position stays apart; 4 (a) and 5 (c) overlap
    # sqrt(0.5) = 0.71 >= 0.5 -> merged to their mean; 6 (b) vs c: sqrt(0.5 * 0) + sqrt(0.5 * 1)... = 0.71 -> merged too
    kept = frontend.kept_positions(probs, blank, slots=10)
    expected = [a, b, (a + c + b) / 3]
    torch.testing.assert_close(kept, torch.stack(expected))
    # over the slots: the least blank positions (by each group's least-kept weight), in time order
    kept = frontend.kept_positions(probs, blank, slots=2)
    torch.testing.assert_close(kept, torch.stack([a, b]))  # groups' weights 0.8, 0.7, 0.55 -> the first two
    assert frontend.kept_positions(probs, torch.ones(7), slots=5).shape == (0, 4)
    # merging off (1.0 needs identical one-hot neighbours): only exact repeats merge
    model, _ = posterior_model("whisper", **CTC, posterior_merge=1.0)
    kept = model.audio_frontend.kept_positions(probs, blank, slots=10)
    torch.testing.assert_close(kept, torch.stack([a, b, a, c, b]))


def test_with_a_blank_the_slots_follow_seconds_and_the_filled_ones_are_the_kept_positions():
    model, processor = posterior_model("whisper", **CTC, posterior_slots_per_second=3.0)
    frontend, table = model.audio_frontend, model.get_input_embeddings().weight
    clips, batch = audio_batch(processor, (2.3, 5.1, 0.7, 61.37))  # the last one over three encoder windows
    layout = frontend.layout
    frames = [layout.clip_frames(len(c)) for c in clips]
    slots = [min(PosteriorConfig(**CTC).downsampled_length(layout, f), math.ceil(f * layout.samples_per_frame / 16000 * 3.0) + 1)
             for f in frames]
    assert [processor.num_audio_tokens(len(c)) for c in clips] == slots
    assert [int(n) for n in (batch["input_ids"] == model.config.audio_token_id).sum(-1)] == slots
    with torch.no_grad():
        frontend.projector.blank.bias.fill_(0.0)  # a blank as likely as the rest: some positions kept, some not
        out = frontend(*frontend_inputs(model, batch), token_table=table)
        states = frontend.encoder_states(*frontend_inputs(model, batch))
        for i, clip_states in enumerate(states):
            probs, blank = frontend.probabilities(clip_states, table)
            read = frontend.kept_positions(probs, blank, slots[i])
            n = read.shape[0]
            assert out.fill_mask[i].tolist() == [True] * n + [False] * (slots[i] - n)
            torch.testing.assert_close(out.embeddings[i][:n], read @ table[: read.shape[-1]], **tolerances(reduction=read.shape[-1]))
        logits = model(**batch).logits
    assert torch.isfinite(logits).all()


def test_a_head_with_temporal_context_starts_as_the_mlp_reads_neighbours_once_trained_and_each_clip_alone():
    """projector_type "conv_mlp" (frontend_base.TemporalMix): fresh, it is the MLP it wraps (its output map is zero);
    with that map set, a position's scores follow its neighbours; in a padded batch each clip reads no other."""
    from audio_minichat.frontend_base import TemporalMix

    model, processor = make_model("whisper", audio_frontend="posterior", projector_type="conv_mlp",
                                  projector_hidden_size=32, frontend_config={**CTC, "posterior_top_k": 5})
    model.audio_frontend.init_weights(0.02)  # a fresh head, as a build initialises it (from_components)
    head = model.audio_frontend.projector
    net = head.net
    assert head.per_sequence and isinstance(net[2], TemporalMix)
    x = torch.randn(9, net[0].in_features)
    with torch.no_grad():
        torch.testing.assert_close(net(x), net[3](net[1](net[0](x))))  # fresh: the plain MLP
        torch.nn.init.normal_(net[2].out.weight, std=0.5)
        moved = x.clone()
        moved[0] += 5.0
        changed = (net(moved) - net(x)).abs().amax(-1)
        assert changed[:3].min() > 0 and torch.all(changed[3:] == 0)  # position 0 reaches positions 1 and 2, no further
    assert_each_clip_alone(model, processor)


def test_a_head_with_attention_reads_the_whole_clip_and_each_clip_alone():
    """projector_type "attn_mlp" (frontend_base.AttentionMix after the TemporalMix): fresh, it is the conv head (its
    blocks' maps back up are zero); once set, position 0's scores follow the clip's last position (beyond the
    convolution's reach); in a padded batch each clip still reads no other (no attention across the padding)."""
    model, processor = make_model("whisper", audio_frontend="posterior", projector_type="attn_mlp",
                                  projector_hidden_size=32, frontend_config={**CTC, "posterior_top_k": 5})
    model.audio_frontend.init_weights(0.02)
    head = model.audio_frontend.projector
    assert head.per_sequence and len(head.context) == 2
    x = torch.randn(9, head.net[0].in_features)
    with torch.no_grad():
        torch.testing.assert_close(head(x), head.net(x))  # fresh: the conv head it holds
        for block in head.context:
            torch.nn.init.normal_(block.up.weight, std=0.5)
        moved = x.clone()
        moved[8] += 5.0
        assert (head(moved) - head(x))[0].abs().max() > 0
    assert_each_clip_alone(model, processor)
