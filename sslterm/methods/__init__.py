"""Self-supervised methods.

Importing the package registers the built-in methods (each module registers itself),
so ``sslterm.methods.registry`` never has to import its members.
"""

from sslterm.methods import simclr as simclr  # noqa: F401  (registers itself)
