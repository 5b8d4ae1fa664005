"""Self-supervised methods.

Importing the package registers the built-in methods (each module registers itself),
so ``sslterm.methods.registry`` never has to import its members.
"""

from sslterm.methods import barlowtwins as barlowtwins  # noqa: F401  (registers itself)
from sslterm.methods import byol as byol  # noqa: F401  (registers itself)
from sslterm.methods import dino as dino  # noqa: F401  (registers itself)
from sslterm.methods import mocov3 as mocov3  # noqa: F401  (registers itself)
from sslterm.methods import simclr as simclr  # noqa: F401  (registers itself)
from sslterm.methods import simsiam as simsiam  # noqa: F401  (registers itself)
from sslterm.methods import vicreg as vicreg  # noqa: F401  (registers itself)
