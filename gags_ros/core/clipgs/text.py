"""Text tower of CLIP-GS here: the offline MiniLM model of the simulation (384-d), frozen, cached.

``gags_ros.core.sim.text_model`` owns the loading; this module only memoises embeddings per text
so training and queries never encode the same caption twice.
"""

from __future__ import annotations

from typing import Callable, Dict, Sequence

import torch

__all__ = ["TextEmbedder", "TextFn"]

TextFn = Callable[[Sequence[str]], torch.Tensor]   # texts -> [T, E] unit embeddings (CPU float32)


class TextEmbedder:
    """Callable ``texts -> [T, E]`` unit embeddings, cached per text.

    ``fn``: the underlying encoder; default the simulation's MiniLM (``sim.text_model.encode_texts``).
    """

    def __init__(self, fn: TextFn | None = None):
        self._fn = fn
        self._cache: Dict[str, torch.Tensor] = {}

    def _encode(self, texts: Sequence[str]) -> torch.Tensor:
        if self._fn is not None:
            return torch.as_tensor(self._fn(list(texts)), dtype=torch.float32)
        from ..sim.text_model import encode_texts

        return torch.as_tensor(encode_texts(list(texts)), dtype=torch.float32)

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        todo = sorted({t for t in texts if t not in self._cache})
        if todo:
            emb = self._encode(todo)
            for t, e in zip(todo, emb):
                self._cache[t] = e
        if not texts:
            return torch.zeros(0, next(iter(self._cache.values())).shape[0] if self._cache else 0)
        return torch.stack([self._cache[t] for t in texts])
