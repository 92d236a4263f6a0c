"""The parse stage: Stanza dependency parses, WordPiece alignment and tree distances (paper Eq. 5).

Public API: ``ParseConfig``, ``Parser`` (the stage), ``tree_distances`` / ``tree_distances_batch``,
``load_wordpiece`` / ``train_wordpiece``, ``build_tiny`` and ``SOURCE`` (in ssrp.parse.models).
Heavy libraries (stanza, torch, tokenizers) are imported only when a model is loaded or trained.
"""

from ssrp.parse.config import ParseConfig
from ssrp.parse.stage import Parser
from ssrp.parse.trees import TreeError, tree_distances, tree_distances_batch
from ssrp.parse.wordpiece import load_wordpiece, train_wordpiece

__all__ = [
    "ParseConfig",
    "Parser",
    "TreeError",
    "tree_distances",
    "tree_distances_batch",
    "load_wordpiece",
    "train_wordpiece",
]
