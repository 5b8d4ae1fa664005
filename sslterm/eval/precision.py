"""The precision policy's one switch: regions the code calls float32 run in true float32.

The encoder trains under autocast and, on CUDA, with TF32 matmuls and convolutions
(``train.tf32``, on by default as in timm): about 1e-3 relative error, harmless there. Losses,
kNN similarities and the linear probe claim float32 and are numerically touchy (logits at
T = 0.1, neighbours that tie), so :func:`full_fp32` turns both autocast and TF32 off
inside them and restores the caller's settings after.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def full_fp32(device_type: str) -> Iterator[None]:
    """Autocast off and float32 matmuls and convolutions without TF32. Under
    ``torch.compile`` only autocast is switched (Dynamo cannot trace a precision change;
    the region then follows ``train.tf32``)."""
    with torch.autocast(device_type=device_type, enabled=False):
        if torch.compiler.is_compiling():
            yield
            return
        matmul, conv = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
        torch.set_float32_matmul_precision("highest")
        torch.backends.cudnn.allow_tf32 = False
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(matmul)
            torch.backends.cudnn.allow_tf32 = conv
