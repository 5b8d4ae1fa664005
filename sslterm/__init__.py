"""sslterm: train self-supervised image encoders and watch them from the terminal."""

__version__ = "0.1.0"
