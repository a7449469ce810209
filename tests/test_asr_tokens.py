"""audio_frontend="asr_tokens": the ASR decoder's state at each token it writes becomes one LLM embedding.

Tiny random Whisper + Llama: greedy decoding with the KV cache equals decoding without it, the processor and
the model agree on each clip's slot count, unfilled slots change nothing (logits and generations equal those
of the same prompt with the unused slots removed) and the token map.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import audio_only, fill_token_map, make_model, make_tokenizer, tolerances

from audio_minichat import AudioMiniChatConfig
from audio_minichat.frontend_base import whisper_window_states
from audio_minichat.training import TrainableConfig, configure_trainable

ASR_OPTIONS = dict(  # frontend_config
    audio_tokens_per_second=4.0, asr_prompt_ids=[3, 4], asr_eos_token_id=2, asr_suppress_tokens=[0, 1], asr_begin_suppress_tokens=[2],
)


def asr_model(seed: int = 0, **options):
    """A tiny asr_tokens model with ASR_OPTIONS updated by ``options`` (its front end's options)."""
    return make_model("whisper", seed=seed, audio_frontend="asr_tokens", encoder_window_seconds=2.0,
                      frontend_config={**ASR_OPTIONS, **options})


def window_token_slots(model, audio_frames: int) -> int:
    return model.config.frontend_options.window_token_slots(model.audio_frontend.layout, audio_frames)


def varied_asr_model(**kwargs):
    """A tiny model whose random decoder writes varied tokens and ends some windows before their last slot.

    (A tiny random decoder at the default init repeats one token; with larger weights it writes
    50 42 28 21 28 16 ..., so taking 16 as the end token stops the longer windows after 5 tokens.)
    """
    model, processor = asr_model(seed=5, asr_eos_token_id=16, asr_begin_suppress_tokens=[], **kwargs)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in model.audio_frontend.asr_decoder.named_parameters():
            if "layer_norm" not in name:
                param.normal_(0.0, 0.5)
    return model, processor


def clip(seconds: float, seed: int, samples: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(samples or int(seconds * 16000))).astype(np.float32)


def prompt_inputs(processor, clips, responses=None):
    prompts = [processor.build_prompt(processor.audio_with_text("summarize the following")) for _ in clips]
    return processor(text=prompts, audio=clips, sampling_rate=16000, responses=responses)


def reference_decode(model, features: torch.Tensor, slots: int):
    """Greedy decoding of one full window without a KV cache: the whole prefix through the decoder each step."""
    cfg, layout, decoder = model.config.frontend_options, model.audio_frontend.layout, model.audio_frontend.asr_decoder
    frames = layout.encoder_frames(layout.window_samples)
    encoded = whisper_window_states(model.audio_encoder, features[None], torch.ones(1, features.shape[-1]), torch.tensor([frames]))
    prefix, states, tokens = list(cfg.asr_prompt_ids), [], []
    head = decoder.embed_tokens.weight
    for step in range(slots):
        hidden = decoder(input_ids=torch.tensor([prefix]), encoder_hidden_states=encoded).last_hidden_state[0, -1]
        logits = hidden @ head.T
        blocked = list(cfg.asr_suppress_tokens) + (list(cfg.asr_begin_suppress_tokens) if step == 0 else [])
        logits[blocked] = float("-inf")
        token = int(logits.argmax())
        if token == cfg.asr_eos_token_id:
            break
        states.append(hidden)
        tokens.append(token)
        prefix.append(token)
    return tokens, (torch.stack(states) if states else torch.zeros(0, hidden.shape[-1]))


def test_slot_counts_agree_between_processor_and_model():
    model, processor = asr_model()
    layout = model.audio_frontend.layout
    assert layout.pad_windows and layout.window_samples == 32000
    for n in (800, 16001, 31999, 32000, 32001, 47999, 100000):
        batch = prompt_inputs(processor, [clip(0, n, samples=n)])
        expected = sum(math.ceil(((e - s) // 160) * 160 / 16000 * 4.0) + 1 for s, e in layout.split_windows(max(n, layout.min_samples)))
        assert processor.num_audio_tokens(n) == expected
        with torch.no_grad():
            out = model.get_audio_features(batch["input_features"], batch["input_features_mask"], batch["audio_window_clip"])
        assert [e.shape[0] for e in out.embeddings] == [m.numel() for m in out.fill_mask] == [expected]
        assert int((batch["input_ids"] == processor.audio_token_id).sum()) == expected
        # every window is padded to the full 2 s for the encoder, the mask marks the audio frames
        assert batch["input_features"].shape[-1] == 200


def test_cached_batched_greedy_decoding_equals_uncached_per_window():
    model, processor = varied_asr_model()
    batch = prompt_inputs(processor, [clip(1.3, 1), clip(0.4, 2), clip(3.1, 3)])  # the last clip has two windows
    with torch.no_grad():
        states, tokens, top = model.audio_frontend.decode(batch["input_features"], batch["input_features_mask"])
        assert top == [None] * 4  # no token mixture asked for
        assert len(states) == batch["input_features"].shape[0] == 4
        layout = model.audio_frontend.layout
        for w in range(4):
            slots = window_token_slots(model, int(batch["input_features_mask"][w].sum()))
            ref_tokens, ref_states = reference_decode(model, batch["input_features"][w], slots)
            assert tokens[w].tolist() == ref_tokens
            assert len(ref_tokens) <= slots
            torch.testing.assert_close(states[w], ref_states, **tolerances(reduction=model.config.audio_config.decoder_ffn_dim))
    slots = [window_token_slots(model, int(n)) for n in batch["input_features_mask"].sum(-1)]
    assert any(len(t) < n for t, n in zip(tokens, slots)) and any(len(t) == n for t, n in zip(tokens, slots))
    assert len({int(x) for t in tokens for x in t}) > 2  # varied tokens: the check has content


def _kept_positions(model, batch):
    with torch.no_grad():
        embeds, mask, _ = model.embed_inputs(
            batch["input_ids"], batch["input_features"], batch["input_features_mask"], batch["audio_window_clip"],
            attention_mask=batch["attention_mask"],
        )
    return embeds, mask


def test_unfilled_slots_change_nothing():
    model, processor = varied_asr_model()
    batch = prompt_inputs(processor, [clip(1.7, 4), clip(0.6, 5)], responses=["hello world", "the water"])
    embeds, mask = _kept_positions(model, batch)
    placeholders = batch["input_ids"] == processor.audio_token_id
    unused = placeholders & (mask == 0)
    assert int(unused.sum()) > 0, "the test needs unfilled slots"
    assert torch.equal(mask, batch["attention_mask"].masked_fill(unused, 0))
    with torch.no_grad():
        logits = model(**batch).logits
        for row in range(2):
            keep = mask[row].bool()
            alone = model.language_model(inputs_embeds=embeds[row : row + 1, keep]).logits[0]
            torch.testing.assert_close(logits[row, keep], alone, **tolerances(reduction=model.config.text_config.intermediate_size))


def test_generation_hides_unfilled_slots_and_batches_like_single_rows():
    model, processor = varied_asr_model()
    clips = [clip(1.9, 6), clip(0.5, 7)]
    batch = prompt_inputs(processor, clips)
    out = model.generate(**batch, max_new_tokens=6, do_sample=False)
    prompt_len = batch["input_ids"].shape[1]
    assert torch.equal(out[:, :prompt_len], batch["input_ids"])
    embeds, mask = _kept_positions(model, batch)
    for row, audio in enumerate(clips):
        alone = prompt_inputs(processor, [audio])
        single = model.generate(**alone, max_new_tokens=6, do_sample=False)
        assert out[row, prompt_len:].tolist() == single[0, alone["input_ids"].shape[1] :].tolist()
        keep = mask[row].bool()
        compact = model.language_model.generate(
            inputs_embeds=embeds[row : row + 1, keep], attention_mask=torch.ones(1, int(keep.sum()), dtype=torch.long),
            max_new_tokens=6, do_sample=False,
        )
        assert out[row, prompt_len:].tolist() == compact[0].tolist()


def test_save_and_reload_keep_decoder_and_token_map(tmp_path):
    model, processor = asr_model(seed=9)
    with torch.no_grad():
        model.audio_frontend.asr_token_map[:, 0].copy_(torch.arange(model.audio_frontend.asr_token_map.shape[0]) % 7 - 1)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    from audio_minichat import AudioMiniChatForConditionalGeneration

    again = AudioMiniChatForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert torch.equal(again.audio_frontend.asr_token_map, model.audio_frontend.asr_token_map)
    batch = prompt_inputs(processor, [clip(1.0, 8)])
    with torch.no_grad():
        a = audio_only(model, batch)
        b = audio_only(again, batch)
    assert [t.tolist() for t in a.audio_token_ids] == [t.tolist() for t in b.audio_token_ids]
    torch.testing.assert_close(a.audio_embeddings[0], b.audio_embeddings[0])


def _spelling_tokenizers():
    """An ASR tokenizer of words and an LLM tokenizer that spells words out letter by letter."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    asr_tok = make_tokenizer()
    letters = sorted(set("".join(asr_tok.get_vocab())))
    backend = Tokenizer(models.WordLevel(vocab={c: i + 1 for i, c in enumerate(letters)} | {"<unk>": 0}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return asr_tok, PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")


@pytest.mark.parametrize("pieces", [1, 4])
def test_token_map_keeps_each_tokens_llm_pieces_and_skips_control_tokens(pieces):
    model, _ = asr_model(asr_token_pieces=pieces, asr_token_mixture=2)
    asr_tok, llm_tok = _spelling_tokenizers()
    truncated = model.audio_frontend.attach_tokenizers(asr_tok, llm_tok)
    table = model.audio_frontend.asr_token_map
    assert table.shape == (model.config.audio_config.vocab_size, pieces)
    words = [w for w, i in asr_tok.get_vocab().items() if i < table.shape[0] and w.isalpha()]
    assert len(words) > 20
    for word in words:
        expected = [llm_tok.convert_tokens_to_ids(c) for c in word[:pieces]]
        assert table[asr_tok.convert_tokens_to_ids(word)].tolist() == expected + [-1] * (pieces - len(expected)), word
    # the spelling tokenizer gives one piece per character: the tokens cut are those longer than `pieces`
    controls = set(asr_tok.all_special_ids) | set(asr_tok.added_tokens_decoder) | set(model.config.frontend_options.asr_prompt_ids)
    mapped = [asr_tok.decode([i]) for i in range(table.shape[0]) if i not in controls]
    assert truncated == sum(len(text) > pieces for text in mapped) > 0
    for special in ("<unk>", "<pad>", "<|im_end|>", "<s>"):
        assert table[asr_tok.convert_tokens_to_ids(special)].tolist() == [-1] * pieces
    assert table[3].tolist() == table[4].tolist() == [-1] * pieces  # the decoding prompt's ids


def test_a_token_of_several_llm_pieces_fills_one_slot_per_piece_within_the_window_budget():
    """Every token reaches the LLM whole: a k-piece token gives k slots holding exactly its pieces' embeddings; a
    one-piece token gets the posterior mixture; the window's slot count (the processor's) still bounds them."""
    model, processor = varied_asr_model(asr_token_mixture=4, asr_token_pieces=3)
    frontend = model.audio_frontend
    with torch.no_grad():
        frontend.asr_token_map.fill_(-1)
        ids = torch.arange(frontend.asr_token_map.shape[0])
        frontend.asr_token_map[:, 0] = ids % 13 + 5
        frontend.asr_token_map[ids % 3 == 0, 1] = 7  # every third ASR token is two pieces, every sixth three
        frontend.asr_token_map[ids % 6 == 0, 2] = 9
        model.projector.net[-1].weight.zero_()
        model.projector.net[-1].bias.zero_()
    batch = prompt_inputs(processor, [clip(1.7, 4), clip(0.6, 5)])
    table = model.get_input_embeddings().weight
    with torch.no_grad():
        out = model.get_audio_features(batch["input_features"], batch["input_features_mask"], batch["audio_window_clip"])
        windows = frontend.decode(batch["input_features"], batch["input_features_mask"])
    assert any(len(t) > 0 and bool((frontend.slot_cost(t) > 1).any()) for t in windows[1])  # the check has content
    for clip_index, (embeddings, fill, tokens) in enumerate(zip(out.embeddings, out.fill_mask, out.token_ids)):
        cost = frontend.slot_cost(tokens)
        assert embeddings.shape[0] == processor.num_audio_tokens(len(clip(1.7, 4) if clip_index == 0 else clip(0.6, 5)))
        assert int(fill.sum()) == int(cost.sum()) <= embeddings.shape[0]
        filled = embeddings[fill]
        slot = 0
        for token, k in zip(tokens.tolist(), cost.tolist()):
            if k > 1:
                pieces = frontend.asr_token_map[token, :k]
                torch.testing.assert_close(filled[slot : slot + k], table[pieces].float())
            else:
                assert not torch.allclose(filled[slot], table[frontend.asr_token_map[token, 0]].float())  # a mixture
            slot += k


def test_asr_tokens_errors_name_the_problem():
    asr, _ = asr_model()
    with pytest.raises(ValueError, match="passes no gradient to the encoder"):
        configure_trainable(asr, TrainableConfig(encoder="lora"))
    from conftest import encoder_config

    with pytest.raises(ValueError, match="needs an encoder-decoder ASR model.*'hubert'"):
        AudioMiniChatConfig(audio_config=encoder_config("hubert"), audio_frontend="asr_tokens")
    with pytest.raises(ValueError, match="audio_tokens_per_second must be positive"):
        AudioMiniChatConfig(audio_frontend="asr_tokens", frontend_config={"audio_tokens_per_second": 0})
    bare, bare_processor = asr_model(asr_prompt_ids=None)
    with pytest.raises(ValueError, match="needs frontend_config's asr_prompt_ids"):
        audio_only(bare, prompt_inputs(bare_processor, [clip(0.5, 1)]))


def test_token_mixture_is_the_expected_llm_embedding_under_the_asr_posterior():
    model, processor = varied_asr_model()
    mixing, _ = asr_model(seed=5, asr_eos_token_id=16, asr_begin_suppress_tokens=[], asr_token_mixture=4)
    mixing.load_state_dict(model.state_dict(), strict=False)  # the same weights, plus the mixture's temperature
    assert hasattr(mixing.projector, "log_temperature") and float(mixing.projector.log_temperature.detach()) == 0.0
    # a fresh mixing model's projector starts as no correction at all
    fresh, _ = asr_model(asr_token_mixture=4)
    assert torch.count_nonzero(fresh.projector.net[-1].weight) == 0
    with torch.no_grad():
        mixing.projector.net[-1].weight.zero_()
        mixing.projector.net[-1].bias.zero_()
        token_map = torch.arange(mixing.audio_frontend.asr_token_map.shape[0]) % 11 - 1  # some tokens are control tokens (-1)
        mixing.audio_frontend.asr_token_map[:, 0].copy_(token_map)
    batch = prompt_inputs(processor, [clip(1.7, 4)])
    table = mixing.get_input_embeddings().weight
    head = mixing.audio_frontend.asr_decoder.embed_tokens.weight
    with torch.no_grad():
        out = audio_only(mixing, batch)
        states = mixing.audio_frontend.decode(batch["input_features"], batch["input_features_mask"])[0][0].unsqueeze(0)  # one window
        tokens = out.audio_token_ids[0]
        assert len(tokens) > 0
        for i, state in enumerate(states[0, : len(tokens)]):
            logits = state @ head.T
            logits[list(mixing.config.frontend_options.asr_suppress_tokens)] = float("-inf")
            scores, ids = logits.topk(4)
            assert int(ids[0]) == int(tokens[i])
            mapped = token_map[ids]
            weights = torch.softmax(scores.masked_fill(mapped < 0, float("-inf")), -1).nan_to_num(0.0)
            expected = (weights[:, None] * table[mapped.clamp(min=0)]).sum(0)
            torch.testing.assert_close(out.audio_embeddings[0][i], expected, **tolerances(reduction=mixing.config.audio_config.d_model))
        # near zero temperature the mixture is the LLM embedding of the best mapped token
        mixing.projector.log_temperature.fill_(-30.0)
        cold = audio_only(mixing, batch).audio_embeddings[0]
        for i, state in enumerate(states[0, : len(tokens)]):
            logits = state @ head.T
            logits[list(mixing.config.frontend_options.asr_suppress_tokens)] = float("-inf")
            ids = logits.topk(4).indices
            best = next((int(token_map[j]) for j in ids if token_map[j] >= 0), None)
            if best is None:
                assert torch.count_nonzero(cold[i]) == 0
            else:
                torch.testing.assert_close(cold[i], table[best], **tolerances(reduction=mixing.config.audio_config.d_model))
    # trainable.projector: temperature trains the temperature alone
    assert configure_trainable(mixing, TrainableConfig(projector="temperature")) == ["audio_frontend.projector.log_temperature"]
    with pytest.raises(ValueError, match="needs a token-mixture model"):
        configure_trainable(model, TrainableConfig(projector="temperature"))  # no mixture in this one
    # the temperature and the correction train
    mixing.projector.log_temperature.data.zero_()
    configure_trainable(mixing, TrainableConfig())
    loss = audio_only(mixing, batch).audio_embeddings[0].pow(2).sum()
    loss.backward()
    assert mixing.projector.log_temperature.grad is not None and mixing.projector.net[-1].weight.grad.abs().sum() > 0


def test_lr_multipliers_give_matching_parameters_their_own_rate():
    from audio_minichat.training import apply_lr_multipliers

    model, _ = asr_model(asr_token_mixture=2)
    configure_trainable(model, TrainableConfig())
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": params, "weight_decay": 0.0}], lr=1e-4)
    apply_lr_multipliers(optimizer, model.named_parameters(), {"log_temperature": 200.0})
    rates = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert rates[id(model.projector.log_temperature)] == pytest.approx(2e-2)
    assert rates[id(model.projector.net[0].weight)] == pytest.approx(1e-4)
    assert sorted(len(g["params"]) for g in optimizer.param_groups) == [1, 2]  # every parameter kept, once
    with pytest.raises(ValueError, match=r"\['encoder'\] match no trainable parameter"):
        apply_lr_multipliers(torch.optim.AdamW(params, lr=1e-4), model.named_parameters(), {"encoder": 2.0})


def test_weights_trained_for_another_front_end_are_refused(tmp_path):
    from safetensors.torch import save_file

    from audio_minichat.assets.default_build import apply_trained_weights

    model, _ = asr_model(asr_token_mixture=2)
    tensors = {f"projector.{k}": v.clone() for k, v in model.projector.state_dict().items()}
    path = tmp_path / "pool.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt", "audio_frontend": "pool"})
    with pytest.raises(ValueError, match=r"pool.safetensors: these weights were trained for audio_frontend='pool' but the model uses audio_frontend='asr_tokens'"):
        apply_trained_weights(model, path)
    save_file(tensors, str(path), metadata={"format": "pt", "downsample": "pool"})  # the key of files written before
    with pytest.raises(ValueError, match=r"trained for audio_frontend='pool' but the model uses audio_frontend='asr_tokens'"):
        apply_trained_weights(model, path)
    tensors["projector.log_temperature"] = torch.tensor(-0.5)
    save_file(tensors, str(path), metadata={"format": "pt", "audio_frontend": "asr_tokens"})
    apply_trained_weights(model, path)
    assert float(model.projector.log_temperature.detach()) == -0.5
