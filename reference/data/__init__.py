"""The embedded training corpus: Jane Austen's *Persuasion* (1818), public domain, plain ASCII.

See README.md in this folder for where the text comes from and why it is public domain.
"""

from importlib import resources

import torch

__all__ = ["CORPUS", "load_corpus", "corpus_tensor"]

#: file name of the default corpus inside the package
CORPUS = "persuasion.txt"


def load_corpus(name: str = CORPUS) -> bytes:
    """The raw bytes of an embedded text (byte-level models read them as token ids 0..255)."""
    return resources.files(__name__).joinpath(name).read_bytes()


def corpus_tensor(name: str = CORPUS) -> torch.Tensor:
    """The embedded text as a 1-D int64 tensor of byte values."""
    return torch.frombuffer(bytearray(load_corpus(name)), dtype=torch.uint8).long()
