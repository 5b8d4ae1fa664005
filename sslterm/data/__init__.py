"""Datasets, caches, samplers and augmentation.

Importing the package registers the built-in datasets (their module registers itself),
so ``sslterm.data.registry`` never has to import its members.
"""

from sslterm.data import datasets as datasets  # noqa: F401  (registers the built-ins)
