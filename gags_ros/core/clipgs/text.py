"""Text tower of CLIP-GS: a frozen text encoder, memoised per text.

The encoder is injected (training uses the simulation's offline MiniLM model,
``gags_ros.sim.text_model.encode_texts``, 384-d; the node uses its teacher's ``embed_text``); this
module only memoises embeddings per text so training and queries never encode the same caption twice.
"""

from __future__ import annotations

from typing import Callable, Dict, Sequence

import torch

__all__ = ["TextEmbedder", "TextFn"]

TextFn = Callable[[Sequence[str]], torch.Tensor]   # texts -> [T, E] unit embeddings (CPU float32)


class TextEmbedder:
    """Callable ``texts -> [T, E]`` unit embeddings, cached per text.

    ``fn``: the underlying encoder, ``texts -> [T, E]`` (e.g. ``gags_ros.sim.text_model.encode_texts``).
    """

    def __init__(self, fn: TextFn):
        self._fn = fn
        self._cache: Dict[str, torch.Tensor] = {}

    def _encode(self, texts: Sequence[str]) -> torch.Tensor:
        return torch.as_tensor(self._fn(list(texts)), dtype=torch.float32)

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        todo = sorted({t for t in texts if t not in self._cache})
        if todo:
            emb = self._encode(todo)
            for t, e in zip(todo, emb):
                self._cache[t] = e
        if not texts:
            return torch.zeros(0, next(iter(self._cache.values())).shape[0] if self._cache else 0)
        return torch.stack([self._cache[t] for t in texts])
