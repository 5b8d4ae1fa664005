"""The Textual app (``sslterm`` without arguments). Never imports torch."""
