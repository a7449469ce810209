"""The offline default build: shipped trained weights applied exactly; the untrained build beside it."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import audio_only
from safetensors import safe_open

from audio_minichat.assets.default_build import SHIPPED_PROJECTOR, build_default, read_build_info
from audio_minichat.assets.offline import resolve_pretrained
from audio_minichat.modeling_audio_minichat import AudioMiniChatForConditionalGeneration


@pytest.mark.integration
def test_default_build_holds_the_shipped_weights_and_untrained_build_does_not():
    trained_dir, untrained_dir = build_default(), build_default(untrained=True)
    assert trained_dir != untrained_dir
    info, info_u = read_build_info(trained_dir), read_build_info(untrained_dir)
    assert info["projector_trained"] is True and info["projector_sha1"]
    assert info_u["projector_trained"] is False and info_u["projector_weights"] is None
    trained = dict(AudioMiniChatForConditionalGeneration.from_pretrained(trained_dir).named_parameters())
    untrained = dict(AudioMiniChatForConditionalGeneration.from_pretrained(untrained_dir).named_parameters())
    with safe_open(str(SHIPPED_PROJECTOR), framework="pt") as fh:
        shipped = {k: fh.get_tensor(k) for k in fh.keys()}
        scaling = float((fh.metadata() or {}).get("lora_scaling", "nan"))
    for name, value in shipped.items():
        if name.startswith("projector."):
            name = f"audio_frontend.{name}"
            assert torch.equal(trained[name], value.to(trained[name].dtype)), name
    lora_a = [k for k in shipped if ".lora_A." in k]
    changed = set()
    for key in lora_a:
        module = key.split(".lora_A.")[0].replace("audio_encoder.", "audio_frontend.encoder.", 1)
        delta = shipped[key.replace(".lora_A.", ".lora_B.")].float() @ shipped[key].float() * scaling
        torch.testing.assert_close(trained[f"{module}.weight"], untrained[f"{module}.weight"] + delta)
        changed.add(f"{module}.weight")
    # everything else (the LLM above all) is the same pretrained weights in both builds
    for name, value in untrained.items():
        if not name.startswith("audio_frontend.projector.") and name not in changed:
            assert torch.equal(trained[name], value), name
    provenance = json.loads(SHIPPED_PROJECTOR.with_suffix(".json").read_text())
    assert provenance["tensors"] == {k: list(v.shape) for k, v in shipped.items()}


@pytest.mark.integration
def test_untrained_builds_start_from_the_same_projector(tmp_path):
    """The projector's initialisation is seeded: a training recipe starts from the same weights every time."""
    from audio_minichat.assets.default_build import DEFAULT_ENCODER, DEFAULT_LLM, build_model

    a = build_model(DEFAULT_LLM, DEFAULT_ENCODER, tmp_path / "a")
    b = build_model(DEFAULT_LLM, DEFAULT_ENCODER, tmp_path / "b", projector_type="mlp", projector_hidden_size=64)
    c = build_model(DEFAULT_LLM, DEFAULT_ENCODER, tmp_path / "c")
    pa, pb, pc = (AudioMiniChatForConditionalGeneration.from_pretrained(d).projector.state_dict() for d in (a, b, c))
    assert pa.keys() == pc.keys() and all(torch.equal(pa[k], pc[k]) for k in pa)
    assert [tuple(v.shape) for v in pb.values()] == [(64, 384), (64,), (576, 64), (576,)]
    assert pa["net.0.weight"].std() > 0  # initialised, not zeros


@pytest.mark.integration
def test_default_reads_whisper_decoding_and_writes_the_llms_own_tokens():
    """The real default on examples/short.wav: its ASR decoding inside the model is Whisper's own greedy
    transcription token for token, and the shipped projector puts each state next to the LLM embedding of
    the token Whisper wrote there (read back as nearest tokens)."""
    from pathlib import Path

    import soundfile as sf
    from transformers import AutoTokenizer

    from audio_minichat.assets.ct2_whisper import transcribe
    from audio_minichat.processing_audio_minichat import AudioMiniChatProcessor
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    model_dir = build_default()
    info = read_build_info(model_dir)
    model = AudioMiniChatForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = AudioMiniChatProcessor.from_pretrained(model_dir)
    assert model.config.audio_frontend == "asr_tokens"
    audio, rate = sf.read(Path(__file__).resolve().parents[1] / "examples" / "short.wav", dtype="float32")
    inputs = processor(text=processor.build_prompt(processor.audio_with_text("Summarize:")), audio=audio, sampling_rate=rate)
    with torch.no_grad():
        out = audio_only(model, inputs)
    tokens, embeddings = out.audio_token_ids[0], out.audio_embeddings[0]
    asr_path = resolve_pretrained(info["encoder"])  # Whisper loaded on its own: an independent reference
    whisper = WhisperForConditionalGeneration.from_pretrained(asr_path).eval()
    _, reference = transcribe(whisper, WhisperProcessor.from_pretrained(asr_path), audio, return_token_ids=True)
    assert tokens.tolist() == reference
    pieces = model.audio_frontend.asr_token_map[tokens]  # every token as its LLM pieces, one slot each
    assert bool((pieces[:, 0] >= 0).all())
    targets = pieces[pieces >= 0]
    assert embeddings.shape[0] == targets.shape[0]
    table = model.get_input_embeddings().weight
    nearest = torch.cdist(embeddings.float(), table.float()).argmin(-1)
    accuracy = float((nearest == targets).float().mean())
    assert accuracy >= 0.9, accuracy
    llm_tok = AutoTokenizer.from_pretrained(model_dir)
    heard = llm_tok.decode(nearest.tolist()).lower()
    for word in ("maya", "late", "bridge", "meeting"):
        assert word in heard, heard


@pytest.mark.integration
def test_spoken_numbers_dates_and_names_reach_the_llm_whole(tmp_path, capsys):
    """SmolLM2 splits digits (" 2024" is five pieces): the default's audio slots hold every piece, so the LLM
    reads the numbers; e2e --json reports what the model read."""
    import json as jsonlib

    from audio_minichat.app.cli import main as cli
    from audio_minichat.dataprep.tts import synthesize, write_wav
    from audio_minichat.dataprep.voices import evaluation_voices

    text = "Maria Lopez arrived about 20 minutes late on March 3rd, 2024, and paid 45 dollars."
    wav = tmp_path / "numbers.wav"
    write_wav(wav, synthesize(text, evaluation_voices()[1]))
    model_dir = build_default()
    model = AudioMiniChatForConditionalGeneration.from_pretrained(model_dir).eval()
    from audio_minichat.processing_audio_minichat import AudioMiniChatProcessor

    processor = AudioMiniChatProcessor.from_pretrained(model_dir)
    import soundfile as sf

    audio, rate = sf.read(wav, dtype="float32")
    inputs = processor(text=processor.build_prompt(processor.audio_with_text("Repeat:")), audio=audio, sampling_rate=rate)
    with torch.no_grad():
        out = audio_only(model, inputs)
    table = model.get_input_embeddings().weight
    nearest = torch.cdist(out.audio_embeddings[0].float(), table.float()).argmin(-1)
    heard = processor.tokenizer.decode(nearest.tolist())
    for spoken in ("20", "2024", "45"):
        assert spoken in heard, heard
    assert "lopez" in heard.lower(), heard
    capsys.readouterr()
    assert cli(["summarize", str(wav), "--mode", "e2e", "--json", "--quiet", "--max-new-tokens", "40"]) == 0
    answer = jsonlib.loads(capsys.readouterr().out)
    assert answer["mode"] == "e2e" and "2024" in answer["transcript"] and "20 minutes" in answer["transcript"]
    assert "20" in answer["text"] and "2024" in answer["text"], answer["text"]  # the summary keeps the numbers


@pytest.mark.integration
def test_a_save_pretrained_copy_keeps_provenance_model_card_and_the_cascade(tmp_path):
    """Everything the CLI needs is in the checkpoint itself: a plain save_pretrained copy serves all three modes."""
    from pathlib import Path

    from audio_minichat.inference import SpeechLLM
    from audio_minichat.processing_audio_minichat import AudioMiniChatProcessor

    source = build_default()
    assert (source / "README.md").read_text().count("whisper-tiny.en") >= 1
    assert not any("/" in str(v) for v in read_build_info(source).values() if isinstance(v, str))  # no paths recorded
    copy = tmp_path / "copy"
    AudioMiniChatForConditionalGeneration.from_pretrained(source).save_pretrained(copy)
    AudioMiniChatProcessor.from_pretrained(source).save_pretrained(copy)
    assert read_build_info(copy) == read_build_info(source)
    wav = Path(__file__).resolve().parents[1] / "examples" / "short.wav"
    original, copied = SpeechLLM(source), SpeechLLM(copy)
    assert copied.projector_trained and copied.transcribe(wav).text == original.transcribe(wav).text != ""
    # the cascade runs on the checkpoint's own Whisper: its encoder and decoder, not another copy
    asr = copied.model.asr_model()
    assert asr.model.encoder is copied.model.audio_encoder and asr.model.decoder is copied.model.audio_frontend.asr_decoder
    assert copied.e2e(wav, max_new_tokens=12).text == original.e2e(wav, max_new_tokens=12).text


@pytest.mark.integration
def test_the_default_decodes_by_its_generation_config():
    """The measured decoding defaults live in the checkpoint (generation_config.json): a bare generate() is greedy,
    does not repeat a 4-gram within its answer, and has room for a summary (not transformers' 20 tokens)."""
    from audio_minichat.assets.default_build import DECODING
    from audio_minichat.processing_audio_minichat import AudioMiniChatProcessor

    model_dir = build_default()
    saved = json.loads((model_dir / "generation_config.json").read_text())
    assert {k: saved.get(k) for k in DECODING} == DECODING
    model = AudioMiniChatForConditionalGeneration.from_pretrained(model_dir).eval()
    assert model.generation_config.answer_no_repeat_ngram_size == 4 and model.generation_config.max_new_tokens == 256
    processor = AudioMiniChatProcessor.from_pretrained(model_dir)
    story = "Say the word hello forty times, with no other words: hello hello hello hello hello hello hello hello."
    inputs = processor(text=processor.build_prompt(processor.audio_with_text("Repeat this:"), transcripts=[story]))
    with torch.no_grad():
        out = model.generate(**inputs)[0, inputs["input_ids"].shape[1]:].tolist()
    grams = [tuple(out[i : i + 4]) for i in range(len(out) - 3)]
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    assert (len(out) > 20 or out[-1] in eos) and len(grams) == len(set(grams))  # not cut at transformers' 20 tokens


@pytest.mark.integration
def test_qformer_lora_variant_holds_the_study_weights_and_leaves_text_prompts_to_the_untouched_llm():
    """build-default --variant qformer_lora: the shipped queries, projector, audio-only LLM adapter and the querying
    adapter's LoRA (merged) are in the model; a text prompt's logits are the plain LLM's, bit for bit."""
    from audio_minichat.assets.default_build import VARIANTS

    shipped_path = VARIANTS["qformer_lora"][1]
    built = build_default(variant="qformer_lora")
    assert read_build_info(built)["projector_trained"] is True
    model = AudioMiniChatForConditionalGeneration.from_pretrained(built).eval()
    base = AudioMiniChatForConditionalGeneration.from_pretrained(build_default(variant="qformer", untrained=True)).eval()
    with safe_open(str(shipped_path), framework="pt") as fh:
        shipped = {k: fh.get_tensor(k) for k in fh.keys()}
        scaling = float((fh.metadata() or {}).get("lora_scaling", "nan"))
    own, start = dict(model.named_parameters()), dict(base.named_parameters())
    full = [k for k in shipped if ".lora_" not in k]
    assert any(k.startswith("audio_lora.") for k in full) and "audio_frontend.queries" in full
    for name in full:
        key = f"audio_frontend.{name}" if name.startswith("projector.") else name
        assert torch.equal(own[key], shipped[name].to(own[key].dtype)), name
    for key in (k for k in shipped if ".lora_A." in k):
        module = key.split(".lora_A.")[0]
        delta = shipped[key.replace(".lora_A.", ".lora_B.")].float() @ shipped[key].float() * scaling
        torch.testing.assert_close(own[f"{module}.weight"], start[f"{module}.weight"] + delta)
    ids = torch.tensor([[1, 9690, 198, 2683, 314, 253, 1345, 30]])
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, base.language_model(input_ids=ids).logits)


@pytest.mark.integration
def test_a_variant_may_name_its_encoder():
    """qformer_lora_base is built on Whisper base (d_model 512, 6 decoder layers in the querying adapter), recorded in
    its provenance; the same cache folder's tiny.en build of another variant is untouched."""
    from audio_minichat.assets.default_build import VARIANTS

    assert VARIANTS["qformer_lora_base"][2] == "whisper-base" and len(VARIANTS["qformer"]) == 2
    built = build_default(variant="qformer_lora_base", untrained=True)
    info = read_build_info(built)
    assert info["encoder"] == "whisper-base" and info["projector_trained"] is False
    config = json.loads((built / "config.json").read_text())
    assert config["audio_config"]["d_model"] == 512 and config["audio_config"]["decoder_layers"] == 6
    assert config["audio_lora"]["r"] == 16 and config["audio_frontend"] == "qformer"
    assert build_default(variant="qformer_lora_base", untrained=True) == built  # cached: no second build
    assert read_build_info(build_default(variant="qformer", untrained=True))["encoder"] == "whisper-tiny.en"
