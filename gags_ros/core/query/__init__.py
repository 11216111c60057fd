"""Text queries against the language map.

- :mod:`.results`: what a query returns (:class:`QueryTarget`, :class:`QueryResult`) and which texts
  are accepted (:func:`check_query_text`);
- :mod:`.engine`: :class:`QueryEngine` (relevancy, 3D targets, relevancy images) and its helpers;
- :mod:`.spatial`: neighbour cleanup and connected components of Gaussian centres.

The LERF-OVS 2D evaluation protocol is :mod:`gags_ros.eval.lerf_ovs` (evaluation, not runtime).
"""

from .engine import MASS_CANDIDATES, PEAK_POOL, QueryEngine, relevancy, spacing_unit
from .results import QueryResult, QueryTarget, check_query_text
from .spatial import MAX_PAIRS, cleanup_mask, connected_components

__all__ = ["MASS_CANDIDATES", "MAX_PAIRS", "PEAK_POOL", "QueryEngine", "QueryResult", "QueryTarget",
           "check_query_text", "cleanup_mask", "connected_components", "relevancy", "spacing_unit"]
