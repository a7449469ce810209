"""The synthetic speakers of :mod:`audio_minichat.dataprep.tts`: the engines' voice catalogues, the
:class:`Voice` spec, and the deterministic training / evaluation voice sets (piper ``joe`` is evaluation-only).
"""
from __future__ import annotations

import dataclasses
import random
import re
from dataclasses import dataclass
from typing import Optional, Sequence


# English accents shipped by Debian's espeak-ng 1.51 (``espeak-ng --voices=en``), without
# the mbrola ones (they need the separate, non-free mbrola voices).
ESPEAK_ACCENTS: tuple[str, ...] = (
    "en-us",
    "en-us-nyc",
    "en-gb",
    "en-gb-x-rp",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
)

# espeak-ng voice variants (files in espeak-ng-data/voices/!v) that sound like a person
# talking.  Left out on purpose: whisper/whisperf (unvoiced), robots (robosoft*, UniRobot,
# anikaRobot), Demonic, Tweaky, Storm, fast, the RicishayMax* and "Mr serious" (space in
# the file name) variants, and kaukovalta, Andy, Andrea (least intelligible to Whisper
# tiny.en in a spot check).
ESPEAK_VARIANTS: tuple[str, ...] = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8",
    "f1", "f2", "f3", "f4", "f5",
    "croak", "klatt", "klatt2", "klatt3", "klatt4", "klatt5",
    "Alex", "Alicia", "Annie", "Denis", "Diogo", "Gene", "Gene2",
    "Henrique", "Hugo", "Jacky", "Lee", "Marco", "Mario", "Michael", "Mike",
    "adam", "anika", "announcer", "antonio", "aunty", "belinda", "benjamin", "boris",
    "caleb", "david", "ed", "edward", "edward2", "grandma", "grandpa", "gustave",
    "iven", "iven2", "iven3", "iven4", "john", "linda", "marcelo", "max",
    "michel", "miguel", "norbert", "pablo", "paul", "pedro", "quincy", "rob", "robert",
    "sandro", "shelby", "steph", "steph2", "steph3", "travis", "victor", "zac",
)

# Debian flite 2.2 built-in voices (``flite -lv``) minus awb_time (a talking clock).
FLITE_VOICES: tuple[str, ...] = ("kal", "kal16", "slt", "rms", "awb")
# flite voices whose intonation follows ``int_f0_target_mean`` (default 95 Hz).
_FLITE_F0_VOICES = {"kal": 95.0, "kal16": 95.0}

# Debian festival voices from festvox-kallpc16k, festvox-kdlpc16k, festvox-us-slt-hts.
FESTIVAL_VOICES: tuple[str, ...] = ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")
_FESTIVAL_HTS = {"cmu_us_slt_arctic_hts"}

TRAINING_ENGINES: tuple[str, ...] = ("espeak-ng", "flite", "festival")
_ENGINES = TRAINING_ENGINES + ("piper",)
_PIPER_VOICES = {"joe"}

# Identifiers end up in argv (and, for festival, inside a Scheme expression): allow a
# conservative character set only, never a leading "-".
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class Voice:
    """One concrete synthetic speaker.

    engine:    "espeak-ng", "flite", "festival" or "piper".
    name:      the engine's voice: an espeak-ng language/accent ("en-gb-scotland"), a
               flite voice ("slt"), a festival voice ("kal_diphone") or a piper voice ("joe").
    variant:   espeak-ng only: voice variant appended as "+variant" ("m3", "f2", "klatt").
    rate:      speaking-rate multiplier, 1.0 = the engine's default speed, > 1 faster.
    pitch:     0..99 with 50 = the voice's default (espeak-ng's own ``-p`` scale).  espeak-ng
               uses it directly; festival's HTS voice shifts by (pitch - 50) / 10 semitones;
               flite's kal/kal16 scale their F0 target the same way.  Other voices ignore it
               (training_voices leaves it None for them).
    eval_only: reserved for evaluation; must never be used to make training data.
    """

    engine: str
    name: str
    variant: Optional[str] = None
    rate: float = 1.0
    pitch: Optional[int] = None
    eval_only: bool = False

    def __post_init__(self):
        if self.engine not in _ENGINES:
            raise ValueError(f"unknown TTS engine {self.engine!r}; expected one of {_ENGINES}")
        if not self.name or not _SAFE_NAME.match(self.name):
            raise ValueError(f"invalid voice name {self.name!r}")
        if self.variant is not None and not _SAFE_NAME.match(self.variant):
            raise ValueError(f"invalid voice variant {self.variant!r}")
        if self.variant is not None and self.engine != "espeak-ng":
            raise ValueError("variant is only supported by espeak-ng")
        if not (0.3 <= float(self.rate) <= 3.0):
            raise ValueError(f"rate must be in [0.3, 3.0], got {self.rate}")
        if self.pitch is not None and not (0 <= int(self.pitch) <= 99):
            raise ValueError(f"pitch must be in [0, 99], got {self.pitch}")

    @property
    def id(self) -> str:
        """A stable, human-readable speaker id, e.g. ``espeak-ng:en-gb-scotland+f3@r1.10,p62``."""
        s = f"{self.engine}:{self.name}"
        if self.variant:
            s += f"+{self.variant}"
        s += f"@r{self.rate:.2f}"
        if self.pitch is not None:
            s += f",p{int(self.pitch)}"
        return s

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Voice":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in fields})


# --------------------------------------------------------------------------- voice sets

# Share of each engine in training_voices() (espeak-ng has by far the most speakers).
_ENGINE_SHARE = {"espeak-ng": 0.6, "flite": 0.25, "festival": 0.15}


def _allocate(n: int, engines: Sequence[str]) -> dict[str, int]:
    shares = {e: _ENGINE_SHARE[e] for e in engines}
    total = sum(shares.values())
    raw = {e: n * s / total for e, s in shares.items()}
    counts = {e: int(v) for e, v in raw.items()}
    # largest remainders, ties broken by the fixed engine order
    for e in sorted(engines, key=lambda e: (-(raw[e] - counts[e]), engines.index(e)))[: n - sum(counts.values())]:
        counts[e] += 1
    return counts


def training_voices(seed: int, n: int, engines: Optional[Sequence[str]] = None) -> list[Voice]:
    """``n`` diverse training voices, deterministic given ``seed``.

    Mix: ~60% espeak-ng (accents cycled evenly, a random variant each, rate 0.8-1.3x,
    pitch 20-80), ~25% flite (voices cycled, rate 0.85-1.2x), ~15% festival (voices
    cycled, rate 0.85-1.2x).  Never contains an ``eval_only`` voice (piper joe).
    ``engines`` restricts the mix (any subset of TRAINING_ENGINES).
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    engines = list(TRAINING_ENGINES if engines is None else engines)
    bad = [e for e in engines if e not in TRAINING_ENGINES]
    if bad:
        raise ValueError(f"not training engines: {bad} (piper is evaluation-only)")
    if not engines:
        raise ValueError("engines is empty")
    rng = random.Random(f"training_voices:{seed}")
    counts = _allocate(n, engines)
    seen: set[str] = set()
    voices: list[Voice] = []

    def add(v: Voice) -> bool:
        if v.id in seen:
            return False
        seen.add(v.id)
        voices.append(v)
        return True

    # espeak-ng: accents round-robin (random order), variants drawn without replacement
    if counts.get("espeak-ng"):
        accents = list(ESPEAK_ACCENTS)
        rng.shuffle(accents)
        variants: list[str] = []
        i = 0
        while sum(v.engine == "espeak-ng" for v in voices) < counts["espeak-ng"]:
            if not variants:
                variants = list(ESPEAK_VARIANTS)
                rng.shuffle(variants)
            accent = accents[i % len(accents)]
            i += 1
            add(Voice("espeak-ng", accent, variants.pop(), rate=round(rng.uniform(0.8, 1.3), 2), pitch=rng.randint(20, 80)))

    for engine, names, pitch_ok in (
        ("flite", FLITE_VOICES, set(_FLITE_F0_VOICES)),
        ("festival", FESTIVAL_VOICES, _FESTIVAL_HTS),
    ):
        k = counts.get(engine, 0)
        order = list(names)
        rng.shuffle(order)
        i = 0
        while sum(v.engine == engine for v in voices) < k:
            name = order[i % len(order)]
            i += 1
            pitch = rng.randint(35, 65) if name in pitch_ok else None
            add(Voice(engine, name, rate=round(rng.uniform(0.85, 1.2), 2), pitch=pitch))

    rng.shuffle(voices)
    for v in voices:
        check_training_voice(v)
    return voices


def evaluation_voices() -> list[Voice]:
    """Fixed evaluation voices: piper ``joe`` (unseen in training, ``eval_only``) and one
    fixed espeak-ng voice (in-distribution: a training-style voice)."""
    return [
        Voice("piper", "joe", rate=1.0, eval_only=True),
        Voice("espeak-ng", "en-us", variant="m3", rate=1.0, pitch=50),
    ]


def check_training_voice(voice: Voice) -> Voice:
    """Raise ValueError if ``voice`` must not be used for training data; return it otherwise."""
    if voice.eval_only or voice.engine == "piper":
        raise ValueError(f"voice {voice.id} is reserved for evaluation and must not be used for training")
    return voice
