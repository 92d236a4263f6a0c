"""Exact fast paths for Stanza's bulk parsing, swapped in only for the duration of a Parser call.

Profiling the bulk path (docs/parse.md, "Figures") showed four costs that have nothing to do with the
networks and that grow with the size of the Document, not with what is computed:

* **the tree decoder** (Chu-Liu-Edmonds in Python, one numpy rebuild per contracted cycle): replaced by
  ``ssrp.parse.mst.one_root_tree`` (the same trees, tested);
* **padded id tensors** (``stanza.models.common.data.get_long_tensor`` fills a tensor one row at a time, one
  torch call per word for the character tensors): ``long_tensor`` builds the same tensor with one numpy
  scatter;
* **vocabulary lookups** (``BaseVocab.map`` calls ``unit2id`` -> ``normalize_unit`` per character):
  ``vocab_map`` does the same dictionary lookups in one comprehension, for the vocabularies whose lookup
  is exactly the base class's (others keep Stanza's);
* **the cyclic garbage collector**: a chunk's Document is hundreds of thousands of container objects that
  stay alive for the whole call, and CPython's generational collector traverses them again and again
  while Stanza allocates (about a quarter of bulk time); ``fast_stanza`` pauses it for the call and
  restores it after (the Documents' reference cycles are then collected as usual).

``fast_stanza()`` swaps all of them in and puts Stanza's originals back on exit, also when parsing
raises. The swap is process-wide (Stanza's module attributes) and reference-counted, so overlapping calls
from several threads share one swap and the last one out restores Stanza (docs/parse.md). Each replacement is tested for equality with
Stanza's function on random inputs (tests/parse/test_parse_speedups.py) and the Parser's output with and
without them is compared on the sample captions.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib
import sys
import threading
from collections.abc import Iterator
from itertools import chain

import numpy as np

from ssrp.parse.mst import one_root_tree

# the modules that bind get_long_tensor at import (the processors a parse pipeline can run)
_LONG_TENSOR_USERS = (
    "stanza.models.pos.data",
    "stanza.models.depparse.data",
    "stanza.models.lemma.data",
    "stanza.models.mwt.data",
    "stanza.models.common.char_model",
)
_DECODER_USERS = ("stanza.models.depparse.model", "stanza.models.depparse.head_constraints")


def long_tensor(tokens_list, batch_size, pad_id=0):
    """Stanza's ``get_long_tensor`` for its common case, a list of id lists (one row per sentence or word):
    the ``batch_size x longest`` int64 tensor of the rows, padded with ``pad_id``. Other shapes (nested
    deeper, a batch size other than the row count, no ids at all) go to Stanza's function."""
    import torch
    from stanza.models.common.data import get_long_tensor

    if not tokens_list or len(tokens_list) != batch_size or not isinstance(tokens_list[0], list):
        return get_long_tensor(tokens_list, batch_size, pad_id)
    try:
        ids = np.array(list(chain.from_iterable(tokens_list)))
    except ValueError:  # ragged nesting
        return get_long_tensor(tokens_list, batch_size, pad_id)
    if ids.ndim != 1 or ids.dtype.kind not in "iub":  # no ids, nested deeper, not ids: Stanza's function decides
        return get_long_tensor(tokens_list, batch_size, pad_id)
    lens = np.fromiter(map(len, tokens_list), dtype=np.int64, count=batch_size)
    longest = int(lens.max())
    out = np.full((batch_size, longest), pad_id, dtype=np.int64)
    out[np.arange(longest) < lens[:, None]] = ids  # row-major: row i gets its ids, then padding
    return torch.from_numpy(out)


@functools.cache
def _lookup_kind(cls: type) -> tuple[str, str]:
    """(kind, UNK unit): kind "base" if ``cls.unit2id`` is exactly BaseVocab's (normalise: None stays None,
    else lowercase if ``lower``; then the id or UNK's id), "word" for pos.WordVocab's (the same unless the
    unit is in its ignore list), "" for any other lookup."""
    from stanza.models.common.vocab import UNK, BaseVocab
    from stanza.models.pos.vocab import WordVocab

    if cls.normalize_unit is not BaseVocab.normalize_unit:
        return "", UNK
    if cls.unit2id is BaseVocab.unit2id:
        return "base", UNK
    return ("word" if cls.unit2id is WordVocab.unit2id else ""), UNK


def vocab_map(self, units):
    """``BaseVocab.map`` (``[self.unit2id(u) for u in units]``) without two Python calls per unit."""
    kind, unk_unit = _lookup_kind(type(self))
    ids = self._unit2id
    unk = ids.get(unk_unit) if kind else None
    if unk is None or (kind == "word" and self.ignore):
        return [self.unit2id(u) for u in units]
    if self.lower:
        return [ids.get(u if u is None else u.lower(), unk) for u in units]
    return [ids.get(u, unk) for u in units]


class _Swap:
    """Process-wide swap with a reference count: the first caller in swaps the fast paths in and pauses the
    collector, the last caller out puts Stanza's functions and the collector's state back, so overlapping
    calls from several threads (a Beam worker shares one model across its threads) never restore early or
    leave the fast paths installed."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0
        self.originals: list[tuple[object, str, object]] = []
        self.collecting = False

    def enter(self) -> None:
        with self.lock:
            if self.users == 0:
                targets = _targets()
                self.originals = [(obj, name, getattr(obj, name)) for obj, name, _ in targets]
                self.collecting = gc.isenabled()
                gc.disable()
                for obj, name, new in targets:
                    setattr(obj, name, new)
            self.users += 1

    def exit(self) -> None:
        with self.lock:
            self.users -= 1
            if self.users == 0:
                for obj, name, old in self.originals:
                    setattr(obj, name, old)
                self.originals = []
                if self.collecting:
                    gc.enable()


_SWAP = _Swap()


def _targets() -> list[tuple[object, str, object]]:
    from stanza.models.common.vocab import BaseVocab

    targets: list[tuple[object, str, object]] = [(BaseVocab, "map", vocab_map)]
    for name in _DECODER_USERS:
        targets.append((importlib.import_module(name), "chuliu_edmonds_one_root", one_root_tree))
    for name in _LONG_TENSOR_USERS:
        module = sys.modules.get(name)  # only what the pipeline imported; importing others is not our business
        if module is not None and hasattr(module, "get_long_tensor"):
            targets.append((module, "get_long_tensor", long_tensor))
    return targets


@contextlib.contextmanager
def fast_stanza(enabled: bool = True) -> Iterator[None]:
    """Run Stanza with ssrp's exact fast paths (see the module docstring); ``enabled=False``: stock Stanza
    (unless another thread's call has them swapped in at the time: they give the same results)."""
    if not enabled:
        yield
        return
    _SWAP.enter()
    try:
        yield
    finally:
        _SWAP.exit()
