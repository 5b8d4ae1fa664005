"""The names in a features export folder (see :mod:`sslterm.eval.export` for the format).

Kept free of torch so that readers of run directories (:mod:`sslterm.runs.warmstart`)
can find an export's files without loading the code that writes them."""

from __future__ import annotations

FORMAT = "sslterm-features"
VERSION = 1
FEATURES_FILE = "features.safetensors"
ENCODER_FILE = "encoder.safetensors"
META_FILE = "meta.json"
