"""The torch work behind CLI commands that sit above the trainer (``sslterm features``):
they build a run's model as training does, so they may import :mod:`sslterm.train`, which
nothing below may. :mod:`sslterm.cli` imports them only when such a command runs."""
