"""The registry of audio front ends: ``config.downsample`` -> the class that hears (one line each).

Adding a front end: one new ``frontend_<name>.py`` with an :class:`~frontend_base.AudioFrontEnd` subclass, and
its line here. The configuration (validation, embedding counts) and the model read only this table.
"""

from __future__ import annotations

from .frontend_asr_tokens import AsrTokensFrontEnd
from .frontend_ctc_pool import CtcPoolFrontEnd
from .frontend_pool import PoolFrontEnd
from .frontend_qformer import QFormerFrontEnd
from .frontend_stack import StackFrontEnd

AUDIO_FRONTENDS = {cls.name: cls for cls in (PoolFrontEnd, StackFrontEnd, CtcPoolFrontEnd, AsrTokensFrontEnd, QFormerFrontEnd)}


def frontend_class(name: str):
    """The front end class registered as ``name`` (a ValueError naming the choices otherwise)."""
    if name not in AUDIO_FRONTENDS:
        raise ValueError(f"downsample must be one of {tuple(AUDIO_FRONTENDS)}, got {name!r}.")
    return AUDIO_FRONTENDS[name]


__all__ = ["AUDIO_FRONTENDS", "frontend_class"]
