"""The standard 3DGS PLY layout (as written by the reference implementation and read by common
splat viewers): binary little-endian float32 vertices with the properties

    x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 [f_rest_0 ...] opacity scale_0 scale_1 scale_2
    rot_0 rot_1 rot_2 rot_3 [any extra float properties]

Values are stored pre-activation, as 3DGS keeps them: ``f_dc`` the degree-0 SH coefficient,
``opacity`` a logit, ``scale_*`` logs of standard deviations (metres), ``rot_*`` a quaternion
(w, x, y, z), not necessarily normalised. Numpy only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from ..files import file_mode, write_atomically

FORMAT = "binary_little_endian 1.0"


def gaussian_properties(n_rest: int = 0) -> list[str]:
    """Property names of the standard layout, in file order, with ``n_rest`` f_rest entries."""
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(n_rest)]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


# numpy dtype -> PLY type name of the extra properties we write
_PLY_NAMES = {"f4": "float", "f8": "double", "i1": "char", "u1": "uchar", "i2": "short", "u2": "ushort",
              "i4": "int", "u4": "uint"}


def write_gaussians_ply(
    path: str | Path,
    means: np.ndarray,      # [N, 3] metres
    sh0: np.ndarray,        # [N, 3] degree-0 SH coefficient (RGB = 0.5 + 0.2821 * sh0)
    opacities: np.ndarray,  # [N] logits
    scales: np.ndarray,     # [N, 3] log standard deviations, log(metres)
    quats: np.ndarray,      # [N, 4] (w, x, y, z)
    sh_rest: Optional[np.ndarray] = None,     # [N, K] higher SH coefficients (3DGS channel-major order)
    extra: Optional[Dict[str, np.ndarray]] = None,  # name -> [N] more properties (float32 unless integer)
    comments: Sequence[str] = (),             # header comment lines (no newlines)
    mode: str = "",                           # permission bits in octal ("0640"); "" = 0666 minus the umask
) -> None:
    """Write the Gaussians atomically (:func:`.files.write_atomically`: a temporary in the same
    folder, then rename; the folder is created).

    ``extra`` arrays of an integer dtype keep it (int32 for int64, which PLY lacks); any other is
    written as float32."""
    n = len(means)
    cols = [np.asarray(means, np.float32).reshape(n, 3), np.zeros((n, 3), np.float32),
            np.asarray(sh0, np.float32).reshape(n, 3)]
    n_rest = 0
    if sh_rest is not None:
        sh_rest = np.asarray(sh_rest, np.float32).reshape(n, -1)
        n_rest = sh_rest.shape[1]
        cols.append(sh_rest)
    cols += [np.asarray(opacities, np.float32).reshape(n, 1), np.asarray(scales, np.float32).reshape(n, 3),
             np.asarray(quats, np.float32).reshape(n, 4)]
    names = gaussian_properties(n_rest)
    types = ["<f4"] * len(names)
    for k, v in (extra or {}).items():
        v = np.asarray(v)
        t = ("<i4" if v.dtype.itemsize > 4 else "<" + v.dtype.str[1:]) if v.dtype.kind in "iu" else "<f4"
        cols.append(v.astype(t).reshape(n, 1))
        names.append(k)
        types.append(t)
    for c in comments:
        if not (c.isascii() and c.isprintable()):
            raise ValueError(f"PLY comment {c!r}: printable ASCII only (the header is ASCII, one line each)")
    data = np.empty(n, dtype=np.dtype(list(zip(names, types))))
    for name, column in zip(names, (b[:, j] for b in cols for j in range(b.shape[1]))):
        data[name] = column
    header = "\n".join(["ply", f"format {FORMAT}"] + [f"comment {c}" for c in comments] + [f"element vertex {n}"]
                       + [f"property {_PLY_NAMES[t[1:]]} {p}" for p, t in zip(names, types)]
                       + ["end_header"]) + "\n"
    write_atomically(path, lambda f: (f.write(header.encode("ascii")), f.write(data.tobytes())),
                     file_mode(mode))


_NP_TYPES = {"float": "f4", "float32": "f4", "double": "f8", "float64": "f8", "uchar": "u1",
             "uint8": "u1", "char": "i1", "int8": "i1", "ushort": "u2", "uint16": "u2",
             "short": "i2", "int16": "i2", "uint": "u4", "uint32": "u4", "int": "i4", "int32": "i4"}


def read_ply_vertices(path: str | Path) -> Dict[str, np.ndarray]:
    """``{property: [N] array}`` of the vertex element of a binary PLY (little or big endian).

    Raises ``ValueError`` for ASCII files, list properties or a truncated body.
    """
    raw = Path(path).read_bytes()
    end = raw.find(b"end_header")
    if not raw.startswith(b"ply") or end < 0:
        raise ValueError(f"{path}: not a PLY file")
    body_start = raw.index(b"\n", end) + 1
    lines = raw[:end].decode("ascii").splitlines()
    fmt, elements = None, []  # [(name, count, [(prop, dtype)])]
    for line in lines[1:]:
        tok = line.split()
        if not tok or tok[0] in ("comment", "obj_info"):
            continue
        if tok[0] == "format":
            fmt = tok[1]
        elif tok[0] == "element":
            elements.append((tok[1], int(tok[2]), []))
        elif tok[0] == "property":
            if tok[1] == "list":
                raise ValueError(f"{path}: list properties are not supported ({line})")
            elements[-1][2].append((tok[2], _NP_TYPES[tok[1]]))
    if fmt not in ("binary_little_endian", "binary_big_endian"):
        raise ValueError(f"{path}: unsupported PLY format {fmt!r} (binary only)")
    order = "<" if fmt == "binary_little_endian" else ">"
    offset = body_start
    for name, count, props in elements:
        dtype = np.dtype([(p, order + t) for p, t in props])
        if offset + count * dtype.itemsize > len(raw):
            raise ValueError(f"{path}: truncated body (element {name})")
        if name == "vertex":
            rec = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
            return {p: rec[p].astype(rec[p].dtype.newbyteorder("=")) for p, _ in props}
        offset += count * dtype.itemsize
    raise ValueError(f"{path}: no vertex element")


def read_gaussians_ply(path: str | Path) -> Dict[str, np.ndarray]:
    """The standard layout back as ``means [N,3], sh0 [N,3], opacities [N], scales [N,3],
    quats [N,4]`` (plus ``sh_rest [N,K]`` when present and any extra properties by name)."""
    v = read_ply_vertices(path)
    missing = [p for p in gaussian_properties() if p not in v]
    if missing:
        raise ValueError(f"{path}: not a 3DGS PLY, missing properties {missing}")
    stack = lambda names: np.stack([v.pop(k) for k in names], axis=1)  # noqa: E731
    out = {"means": stack(["x", "y", "z"]), "sh0": stack(["f_dc_0", "f_dc_1", "f_dc_2"]),
           "opacities": v.pop("opacity"), "scales": stack(["scale_0", "scale_1", "scale_2"]),
           "quats": stack(["rot_0", "rot_1", "rot_2", "rot_3"])}
    for k in ("nx", "ny", "nz"):
        v.pop(k)
    rest = sorted((k for k in v if k.startswith("f_rest_")), key=lambda k: int(k[7:]))
    if rest:
        out["sh_rest"] = stack(rest)
    out.update(v)
    return out
