"""Entry points: the ``audio-minichat`` command line."""
