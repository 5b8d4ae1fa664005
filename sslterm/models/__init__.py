from sslterm.models.encoder import apply_small_stem, create_encoder
from sslterm.models.heads import projector

__all__ = ["apply_small_stem", "create_encoder", "projector"]
