"""Neighbour searches on Gaussian centres: a spatial hash, the radius-neighbour cleanup and exact
single-linkage connected components (the query engine's clusters; CLIP-GS object proposals).

Neighbour searches hash the points into cubic cells and bound each count from the cells before
measuring any distance, so only the points of undecided cells pay for exact pair distances; the
linked cell pairs of the clustering go to the host, where scipy's graph search labels them.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional

import numpy as np
import torch

MAX_PAIRS = 1 << 24  # (point, candidate) pairs measured at once: bounds the memory of a search

# Both searches work on cells of a cubic grid whose diagonal is just below the radius, so all
# points of one cell are within the radius of each other, and a neighbour lies at most 2 cells away
# per axis (125 cells). The tables are dense ``[C or N, 125]`` tensors rather than neighbour
# lists: on the GPU a query of a few thousand points costs launches and host synchronisations,
# not arithmetic, so the code keeps both few (gathers use index_select, the lightest launch).
_REACH = 2
_OFFSETS: Dict[tuple, torch.Tensor] = {}
_POINT_TABLE_MAX = 1 << 25     # largest [points x 125] pair-count table of the cleanup (int64 entries)


def _offsets(reach: int, device) -> torch.Tensor:
    """``[(2 reach + 1)^3, 3]`` int64 cell offsets, symmetric order (cached per device)."""
    key = (reach, str(device))
    if key not in _OFFSETS:
        r = torch.arange(-reach, reach + 1)
        _OFFSETS[key] = torch.cartesian_prod(r, r, r).to(device)
    return _OFFSETS[key]


def _take(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x[idx]`` along dim 0 for an integer ``idx`` of any shape."""
    if idx.dim() == 1:
        return x.index_select(0, idx)
    return x.index_select(0, idx.reshape(-1)).view(*idx.shape, *x.shape[1:])


class _Grid:
    """Points ``[N, 3]`` hashed into cubic cells of side ``cell``; tables for the ``reach`` cells
    around each occupied cell."""

    def __init__(self, pts: torch.Tensor, cell: float, reach: int = _REACH):
        dev = pts.device
        self.n = pts.shape[0]
        ijk = torch.floor((pts - pts.amin(dim=0)) / cell).long() + reach   # margin: offsets stay in range
        dims = ijk.amax(dim=0) + (reach + 1)
        # linear cell keys; neighbour keys are key + offset key thanks to the margin
        strides = torch.stack([dims[1] * dims[2], dims[2], torch.ones_like(dims[2])])
        key = (ijk * strides).sum(dim=-1)                     # (no integer GEMM on CUDA)
        skey, self.order = torch.sort(key)                    # point indices sorted by cell
        self.keys, inverse, self.counts = torch.unique_consecutive(
            skey, return_inverse=True, return_counts=True)    # [C] (synchronises: C)
        self.num_cells = int(self.keys.shape[0])
        self.starts = torch.cumsum(self.counts, 0) - self.counts
        self.cell_of = torch.empty_like(inverse).index_copy_(0, self.order, inverse)   # [N] cell of each point
        nkey = self.keys[:, None] + (_offsets(reach, dev) * strides).sum(dim=-1)       # [C, O]
        pos = torch.searchsorted(self.keys, nkey).clamp_max_(self.num_cells - 1)
        found = _take(self.keys, pos) == nkey
        self.nb = torch.where(found, pos, 0)                  # [C, O] neighbour cell (0 where none)
        self.nb_count = torch.where(found, _take(self.counts, pos), 0)   # [C, O] its points (0: none)


def _chunk_edges(cum: torch.Tensor, max_pairs: int) -> List[int]:
    """Split items with inclusive cumulative pair counts ``cum`` ``[Q]`` (CPU) into runs of about
    ``max_pairs`` pairs (an item larger than that gets a run of its own): ``[0, ..., Q]``."""
    Q, total = int(cum.shape[0]), int(cum[-1])
    if total <= max_pairs:
        return [0, Q]
    bounds = torch.searchsorted(cum, torch.arange(max_pairs, total, max_pairs), right=True).tolist()
    return sorted(set([0] + [b for b in bounds if 0 < b < Q] + [Q]))


def _pairs(grid: _Grid, pairs: torch.Tensor, max_pairs: int, rows: Optional[torch.Tensor] = None):
    """Yield ``(entry, i, j)`` chunks of point pairs from a table with ``O`` = 125 columns.

    ``rows`` None: a cell table; ``pairs`` ``[C * O]`` counts, normally ``counts[a] * nb_count[a, o]``
    (0 = skip), and the pairs are every point ``i`` of cell ``a`` with every point ``j`` of cell
    ``grid.nb[a, o]``. ``rows`` ``[N]`` (the cell of each point): a point table; ``pairs``
    ``[N * O]`` (normally ``nb_count[rows[p], o]``) pairs point ``i = p`` with every point of cell
    ``grid.nb[rows[p], o]``. ``entry`` = row * O + o of each pair."""
    cum = torch.cumsum(pairs, 0)
    total = int(cum[-1]) if cum.numel() else 0               # synchronises
    if total == 0:
        return
    if total <= max_pairs:
        edges, ends = [0, pairs.shape[0]], [0, total]
    else:
        cum_cpu = cum.cpu()
        edges = _chunk_edges(cum_cpu, max_pairs)
        ends = [0] + [int(cum_cpu[e - 1]) for e in edges[1:]]      # pairs before each chunk
    dev = pairs.device
    O = grid.nb.shape[1]
    nb_flat = grid.nb.reshape(-1)
    first = cum - pairs                                       # first pair of each entry
    for k, (s, e) in enumerate(zip(edges[:-1], edges[1:])):
        n = ends[k + 1] - ends[k]
        if n == 0:
            continue
        entry = torch.repeat_interleave(torch.arange(s, e, device=dev), pairs[s:e], output_size=n)
        local = torch.arange(ends[k], ends[k + 1], device=dev) - first.index_select(0, entry)
        row = torch.div(entry, O, rounding_mode="floor")
        if rows is None:
            a = row
            b = nb_flat.index_select(0, entry)
            nb_n = grid.counts.index_select(0, b)
            i = grid.order.index_select(0, grid.starts.index_select(0, a) + torch.div(local, nb_n, rounding_mode="floor"))
            local = local % nb_n
        else:
            i = row
            b = nb_flat.index_select(0, rows.index_select(0, row) * O + entry % O)
        j = grid.order.index_select(0, grid.starts.index_select(0, b) + local)
        yield entry, i, j


def _close(pts: torch.Tensor, i: torch.Tensor, j: torch.Tensor, r2: float) -> torch.Tensor:
    """``[P]`` bool: points ``i`` and ``j`` within squared distance ``r2``."""
    return (pts.index_select(0, i) - pts.index_select(0, j)).pow_(2).sum(-1) <= r2


def cleanup_mask(pts: torch.Tensor, radius: float, keep: int, drop: int,
                 max_pairs: int = MAX_PAIRS) -> torch.Tensor:
    """Radius-neighbour cleanup of ``pts`` ``[S, 3]`` -> ``[S]`` bool kept.

    Neighbours: other points within ``radius`` (inclusive). Core: > ``keep`` neighbours (kept);
    noise: < ``drop`` (dropped); border (in between): kept when a core point is a neighbour.
    ``radius <= 0`` disables the cleanup (everything kept).
    """
    S = pts.shape[0]
    dev = pts.device
    if S == 0 or radius <= 0:
        return torch.ones(S, dtype=torch.bool, device=dev)
    grid = _Grid(pts, radius / math.sqrt(3.0) * (1.0 - 1e-6))
    # Per cell, bounds on the neighbour count of its points: its own cell's other points are all
    # neighbours (lower), the 125 cells around hold every neighbour (upper). Only points of cells
    # the bounds leave open are measured, pair by pair.
    lower = grid.counts - 1                                   # [C]
    upper = grid.nb_count.sum(dim=1) - 1
    core_cell = lower > keep
    open_cell = ~core_cell & (upper >= drop)
    if S * grid.nb.shape[1] <= _POINT_TABLE_MAX:              # pairs per (point, offset): fewer launches
        rows = grid.cell_of
        pairs = (_take(grid.nb_count, rows) * _take(open_cell, rows)[:, None]).reshape(-1)      # [S * O]
    else:                                                     # per (cell, offset): less memory
        rows = None
        pairs = (grid.counts[:, None] * grid.nb_count * open_cell[:, None]).reshape(-1)          # [C * O]
    # exact counts: the pairs include each measured point with itself once, hence the -1; points
    # not measured keep -1, below every threshold
    count = torch.full((S,), -1, dtype=torch.long, device=dev)
    r2 = radius * radius
    found = []
    for _, i, j in _pairs(grid, pairs, max_pairs, rows):
        close = _close(pts, i, j, r2)
        count.index_add_(0, i, close.long())
        found.append((i, j, close))
    core = _take(core_cell, grid.cell_of) | (count > keep)
    # a border point (measured, drop <= count <= keep) stays next to a core point; its pair with
    # itself never counts, as it is not core
    hit = torch.zeros(S, dtype=torch.long, device=dev)
    if len(found) > 1:                                        # chunked: enumerate again, not store
        found = ((i, j, _close(pts, i, j, r2)) for _, i, j in _pairs(grid, pairs, max_pairs, rows))
    for i, j, close in found:
        hit.index_add_(0, i, (close & core.index_select(0, j)).long())
    return core | ((count >= drop) & (hit > 0))


def _cell_components(pts: torch.Tensor, radius: float, max_pairs: int = MAX_PAIRS):
    """Single-linkage components of ``pts`` ``[K, 3]`` (K > 0, radius > 0) at the cell level.

    Returns ``(grid, labels, n)``: the :class:`_Grid`, ``[C]`` int64 numpy component of each cell
    (numbered by smallest cell id), and the number of components. The cell tests run on the
    device; the linked cell pairs (a few per cell) go to the host, where scipy's graph search
    labels them (a label propagation on the GPU costs dozens of tiny launches and host syncs)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as graph_components

    dev = pts.device
    grid = _Grid(pts, radius / math.sqrt(3.0) * (1.0 - 1e-6))
    C, nb = grid.num_cells, grid.nb
    O = nb.shape[1]
    r2 = radius * radius
    # each unordered pair of occupied cells once: 1 when their first points are within the
    # radius (linked for sure), else 2 (linked when some pair of their points is)
    rep = _take(pts, _take(grid.order, grid.starts))          # [C, 3] first point of each cell
    sure = (_take(rep, nb) - rep[:, None]).pow_(2).sum(-1) <= r2
    code = (2 - sure.long()) * ((nb > torch.arange(C, device=dev)[:, None]) & (grid.nb_count > 0))
    entry = code.reshape(-1).nonzero(as_tuple=True)[0]
    host = torch.stack([entry, _take(nb.reshape(-1), entry) * 4 + _take(code.reshape(-1), entry)]).cpu().numpy()
    a, b, kind = host[0] // O, host[1] >> 2, host[1] & 3

    def label(edges):
        g = coo_matrix((np.ones(int(edges.sum())), (a[edges], b[edges])), shape=(C, C))
        return graph_components(g, directed=False)

    n, lab = label(kind == 1)
    todo = (kind == 2) & (lab[a] != lab[b])                   # maybe, and not joined yet
    if todo.any():
        # never linked when the boxes of their points are farther apart than the radius; the
        # rest are measured point by point
        e = torch.as_tensor(host[0][todo], device=dev)
        ca, cb = torch.div(e, O, rounding_mode="floor"), _take(nb.reshape(-1), e)
        idx = grid.cell_of[:, None].expand(-1, 3)
        bmin = torch.full((C, 3), float("inf"), device=dev).scatter_reduce_(0, idx, pts, "amin")
        bmax = torch.full((C, 3), float("-inf"), device=dev).scatter_reduce_(0, idx, pts, "amax")
        gap = torch.maximum(_take(bmin, cb) - _take(bmax, ca), _take(bmin, ca) - _take(bmax, cb)).clamp_min_(0)
        pairs = torch.zeros(C * O, dtype=torch.long, device=dev)
        pairs[e] = (_take(grid.counts, ca) * _take(grid.nb_count.reshape(-1), e)) * (gap.pow_(2).sum(-1) <= r2)
        linked = torch.zeros(C * O, dtype=torch.long, device=dev)
        for ent, i, j in _pairs(grid, pairs, max_pairs):
            linked.index_add_(0, ent, _close(pts, i, j, r2).long())
        close = _take(linked, e).cpu().numpy() > 0
        link = kind == 1
        link[np.flatnonzero(todo)[close]] = True
        n, lab = label(link)
    return grid, lab.astype(np.int64), int(n)


def connected_components(pts: torch.Tensor, radius: float, max_pairs: int = MAX_PAIRS) -> torch.Tensor:
    """Single-linkage components of ``pts`` ``[K, 3]``: points closer than ``radius`` (inclusive)
    share a component. Returns ``[K]`` int64 labels ``0 .. n-1``.

    Cells have a diagonal below ``radius``, so a cell's points form one component at once. Two
    cells within reach are linked without measuring points when their first points are within
    the radius; otherwise, when they are still in different components, never when the boxes of
    their points are farther apart than the radius, else point by point.
    """
    K = pts.shape[0]
    dev = pts.device
    if K == 0:
        return torch.zeros(0, dtype=torch.long, device=dev)
    if radius <= 0:
        return torch.unique(pts, dim=0, return_inverse=True)[1]
    grid, lab, _ = _cell_components(pts, radius, max_pairs)
    return torch.as_tensor(lab, device=dev)[grid.cell_of]
