"""Tests for audio_minichat.dataprep.tts (offline, CPU; engines installed by scripts/install_system_deps.sh)."""

import numpy as np
import pytest

from audio_minichat.dataprep.tts import (
    ESPEAK_ACCENTS,
    TARGET_SAMPLE_RATE,
    TRAINING_ENGINES,
    TTSError,
    Voice,
    check_training_voice,
    engine_available,
    evaluation_voices,
    synthesize,
    training_voices,
)

needs = {e: pytest.mark.skipif(not engine_available(e), reason=f"{e} not installed") for e in TRAINING_ENGINES + ("piper",)}

SHORT = "The train leaves at nine."
LONG = (
    "The train leaves at nine in the morning, so we should meet at the station by half past eight. "
    "Bring a warm coat, because the forecast says it will be cold and windy by the coast, "
    "and the walk from the harbour to the village takes about forty minutes."
)

ENGINE_VOICES = [
    pytest.param(Voice("espeak-ng", "en-us"), marks=needs["espeak-ng"], id="espeak-ng"),
    pytest.param(Voice("flite", "slt"), marks=needs["flite"], id="flite"),
    pytest.param(Voice("festival", "kal_diphone"), marks=needs["festival"], id="festival"),
]


def _dur(a):
    return a.size / TARGET_SAMPLE_RATE


@pytest.mark.parametrize("voice", ENGINE_VOICES)
def test_synthesize_format_and_duration(voice):
    a = synthesize(SHORT, voice)
    b = synthesize(LONG, voice)
    for x in (a, b):
        assert isinstance(x, np.ndarray) and x.dtype == np.float32 and x.ndim == 1
        assert np.all(np.isfinite(x)) and 0.5 < np.abs(x).max() <= 1.0
    ratio_words = len(LONG.split()) / len(SHORT.split())  # 10.4
    ratio_dur = _dur(b) / _dur(a)
    assert 0.8 < _dur(a) < 4.0, _dur(a)
    # duration grows with the text (sentence-final silence makes short texts relatively long)
    assert 0.35 * ratio_words < ratio_dur < 1.5 * ratio_words, (ratio_dur, ratio_words)
    # plausible speaking rate: 1.5 to 5 words per second
    assert 1.5 < len(LONG.split()) / _dur(b) < 5.0


@needs["espeak-ng"]
def test_rate_changes_duration_and_is_deterministic():
    slow = synthesize(LONG, Voice("espeak-ng", "en-us", rate=0.8))
    fast = synthesize(LONG, Voice("espeak-ng", "en-us", rate=1.3))
    assert _dur(fast) < 0.8 * _dur(slow)
    again = synthesize(LONG, Voice("espeak-ng", "en-us", rate=1.3))
    np.testing.assert_array_equal(fast, again)


def _differs(a, b):
    if abs(a.size - b.size) > 0.02 * max(a.size, b.size):
        return True
    n = min(a.size, b.size)
    return float(np.mean(np.abs(a[:n] - b[:n]))) > 1e-3


@needs["espeak-ng"]
def test_different_espeak_voices_give_different_audio():
    voices = [
        Voice("espeak-ng", "en-us", variant="m3"),
        Voice("espeak-ng", "en-gb-scotland", variant="f2"),
        Voice("espeak-ng", "en-us", variant="m3", pitch=80),
        Voice("espeak-ng", "en-029", variant="klatt"),
    ]
    outs = [synthesize(SHORT, v) for v in voices]
    for i in range(len(outs)):
        for j in range(i + 1, len(outs)):
            assert _differs(outs[i], outs[j]), (voices[i].id, voices[j].id)


@needs["flite"]
@needs["festival"]
def test_different_engines_give_different_audio():
    a = synthesize(SHORT, Voice("flite", "kal16"))
    b = synthesize(SHORT, Voice("flite", "slt"))
    c = synthesize(SHORT, Voice("festival", "cmu_us_slt_arctic_hts"))
    assert _differs(a, b) and _differs(b, c) and _differs(a, c)


def test_training_voices_never_contain_eval_voices():
    eval_ids = {v.id for v in evaluation_voices() if v.eval_only}
    assert eval_ids, "piper joe must be an eval-only voice"
    for seed in range(60):
        vs = training_voices(seed, 150)
        assert len(vs) == 150
        assert len({v.id for v in vs}) == 150
        for v in vs:
            assert not v.eval_only
            assert v.engine != "piper"
            assert v.id not in eval_ids
            assert "joe" not in v.id


def test_training_voices_diverse_and_deterministic():
    vs = training_voices(7, 100)
    assert vs == training_voices(7, 100)
    assert vs != training_voices(8, 100)
    assert {v.engine for v in vs} == set(TRAINING_ENGINES)
    accents = {v.name for v in vs if v.engine == "espeak-ng"}
    assert accents == set(ESPEAK_ACCENTS)
    assert len({v.variant for v in vs if v.engine == "espeak-ng"}) >= 40
    rates = [v.rate for v in vs]
    assert max(rates) - min(rates) > 0.3
    assert training_voices(0, 0) == []
    only_flite = training_voices(1, 12, engines=["flite"])
    assert {v.engine for v in only_flite} == {"flite"} and len(only_flite) == 12
    with pytest.raises(ValueError):
        training_voices(0, 5, engines=["piper"])


def test_evaluation_voices_and_guard():
    ev = evaluation_voices()
    joe = [v for v in ev if v.engine == "piper"]
    assert len(joe) == 1 and joe[0].name == "joe" and joe[0].eval_only
    assert any(v.engine == "espeak-ng" for v in ev)
    with pytest.raises(ValueError):
        check_training_voice(joe[0])
    with pytest.raises(ValueError):
        check_training_voice(Voice("piper", "joe"))  # even if someone forgets eval_only
    v = Voice("espeak-ng", "en-us")
    assert check_training_voice(v) is v


@needs["espeak-ng"]
def test_tts_error_for_nonexistent_espeak_voice():
    text = "This sentence is rather long so that the error message has to cut it somewhere after sixty characters."
    with pytest.raises(TTSError) as ei:
        synthesize(text, Voice("espeak-ng", "en-xx-nowhere"))
    msg = str(ei.value)
    assert "espeak-ng" in msg and "en-xx-nowhere" in msg
    assert text[:60] in msg and text not in msg
    with pytest.raises(TTSError, match="variant"):
        synthesize(text, Voice("espeak-ng", "en-us", variant="nosuchvariant"))


@needs["flite"]
def test_tts_error_for_nonexistent_flite_voice():
    with pytest.raises(TTSError, match="flite.*nosuchvoice"):
        synthesize(SHORT, Voice("flite", "nosuchvoice"))


@needs["festival"]
def test_tts_error_for_nonexistent_festival_voice_has_stderr():
    with pytest.raises(TTSError) as ei:
        synthesize(SHORT, Voice("festival", "nosuchvoice"))
    assert "festival" in str(ei.value) and "stderr=" in str(ei.value)
    assert ei.value.stderr


@needs["espeak-ng"]
def test_tts_error_for_empty_text():
    for text in ["", "   ", "...!?"]:
        with pytest.raises(TTSError, match="empty"):
            synthesize(text, Voice("espeak-ng", "en-us"))


def test_voice_validation():
    with pytest.raises(ValueError):
        Voice("espeak-ng", "-v")  # would read as an option
    with pytest.raises(ValueError):
        Voice("festival", "kal) (system \"id\")")  # would break out of the Scheme call
    with pytest.raises(ValueError):
        Voice("nosuchengine", "x")
    with pytest.raises(ValueError):
        Voice("flite", "slt", variant="m1")
    with pytest.raises(ValueError):
        Voice("espeak-ng", "en-us", rate=10)
    v = Voice("espeak-ng", "en-gb", variant="f2", rate=1.1, pitch=60)
    assert Voice.from_dict(v.to_dict()) == v
    assert v.id == "espeak-ng:en-gb+f2@r1.10,p60"


@pytest.mark.parametrize("voice", ENGINE_VOICES)
def test_text_never_reaches_a_shell(voice, tmp_path):
    marker = tmp_path / "pwned"
    text = f'Hello $(touch {marker}) and `touch {marker}`; touch {marker} "quoted" \'single\' -v --help.'
    a = synthesize(text, voice)
    assert a.size > 0
    assert not marker.exists()


@needs["piper"]
def test_piper_joe_eval_voice():
    joe = next(v for v in evaluation_voices() if v.engine == "piper")
    a = synthesize(SHORT, joe)
    assert a.dtype == np.float32 and a.ndim == 1
    assert 0.8 < _dur(a) < 4.0


def test_tts_error_on_silent_or_empty_engine_output(monkeypatch):
    from audio_minichat.dataprep import tts_engines

    voice = Voice("espeak-ng", "en-us")
    monkeypatch.setitem(tts_engines._SYNTH, "espeak-ng", lambda text, v, tmp: (np.zeros(22050, np.float32), 22050))
    with pytest.raises(TTSError, match="silent") as ei:
        synthesize(SHORT, voice)
    assert "espeak-ng" in str(ei.value) and SHORT in str(ei.value)
    monkeypatch.setitem(tts_engines._SYNTH, "espeak-ng", lambda text, v, tmp: (np.zeros(0, np.float32), 22050))
    with pytest.raises(TTSError, match="empty"):
        synthesize(SHORT, voice)
