"""What a text query returns: targets (metres, world frame) and the reason when there are none."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np


@dataclass
class QueryTarget:
    """One 3D answer to a text (metres, world frame)."""

    label: str                 # the query text
    score: float               # mean raw relevancy of its Gaussians near its relevancy peak, in [0, 1]
    centroid: np.ndarray       # [3] its location: mean of the centres of those Gaussians (query.peak_radius)
    box_min: np.ndarray        # [3] axis-aligned box of its Gaussian centres
    box_max: np.ndarray        # [3]
    indices: np.ndarray        # [count] int64 Gaussian indices into the map
    count: int
    confidence: float = 0.0    # calibrated probability that it is right (calibration.py; query.calibration)
    features: Optional[np.ndarray] = None   # [6] the confidence's features (calibration.FEATURES)


@dataclass
class QueryResult:
    """Answer to one text: ``targets`` best first; ``reason`` says why it is empty (or "")."""

    text: str
    targets: List[QueryTarget] = field(default_factory=list)
    reason: str = ""
    selected: int = 0          # Gaussians above the threshold
    kept: int = 0              # ... after the neighbour cleanup
    timings: Dict[str, float] = field(default_factory=dict)  # seconds


def check_query_text(text, max_length: int) -> str:
    """Why ``text`` cannot be a query ("" when it can): empty, or longer than ``max_length``
    characters (``query.max_text_length``)."""
    if not isinstance(text, str) or not text.strip():
        return "empty query text"
    if len(text) > max_length:
        return f"query text has {len(text)} characters; at most {max_length} (parameter query.max_text_length)"
    return ""
