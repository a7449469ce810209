"""The registry of audio front-end modules: ``config.audio_frontend`` -> the class that hears (one line each).

A front end is two flat files at the root: ``frontend_<name>_config.py`` (its options class: fields, defaults,
checks, the ``num_embeddings`` arithmetic; no torch), registered in ``FRONTEND_CONFIGS``
(``configuration_audio_minichat.py``), and ``frontend_<name>.py`` (the ``nn.Module``, whose ``config_class`` is that
options class), registered here. The model reads only this table.
"""

from __future__ import annotations

from .configuration_audio_minichat import frontend_config_class
from .frontend_asr_tokens import AsrTokensFrontEnd
from .frontend_ctc_pool import CtcPoolFrontEnd
from .frontend_pool import PoolFrontEnd
from .frontend_posterior import PosteriorFrontEnd
from .frontend_qformer import QFormerFrontEnd
from .frontend_stack import StackFrontEnd

AUDIO_FRONTENDS = {cls.config_class.name: cls for cls in (PoolFrontEnd, StackFrontEnd, CtcPoolFrontEnd, AsrTokensFrontEnd, QFormerFrontEnd, PosteriorFrontEnd)}


def frontend_class(name: str):
    """The front-end module class registered as ``name`` (a ValueError naming the choices otherwise)."""
    frontend_config_class(name)  # an unknown name: the options registry's error
    if name not in AUDIO_FRONTENDS:
        raise ValueError(f"audio_frontend {name!r} has options (FRONTEND_CONFIGS) but no module in frontends.py.")
    return AUDIO_FRONTENDS[name]


__all__ = ["AUDIO_FRONTENDS", "frontend_class"]
