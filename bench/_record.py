"""Append one benchmark record to bench/results/<benchmark>.json (newest last)."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def device_name() -> str:
    """GPU model when torch sees one, else the CPU model and core count."""
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    model = "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} ({os.cpu_count()} cores)"


def commit() -> str:
    """HEAD of the repo (with +dirty when the tree has changes); GAGS_COMMIT overrides it (device runs)."""
    if os.environ.get("GAGS_COMMIT"):
        return os.environ["GAGS_COMMIT"]
    try:
        root = Path(__file__).resolve().parent.parent
        head = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                                       stderr=subprocess.DEVNULL).strip()
        # bench/results is left out: a run appending its own records must not mark itself dirty.
        dirty = subprocess.check_output(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                         ":(exclude)bench/results"], cwd=root,
                                        text=True, stderr=subprocess.DEVNULL).strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def record(benchmark: str, metric: str, value: float, unit: str, command: str | None = None,
           results_dir: Path | None = None, **extra) -> dict:
    """Append ``{"metric", "value", "unit", "device", "commit", "date", "command", **extra}``."""
    rec = {
        "metric": metric,
        "value": float(value),
        "unit": unit,
        "device": device_name(),
        "commit": commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command or " ".join([Path(sys.executable).name] + sys.argv),
    }
    rec.update(extra)
    d = Path(os.environ.get("GAGS_BENCH_RESULTS", results_dir or RESULTS))
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{benchmark}.json"
    data = json.loads(path.read_text()) if path.exists() else []
    data.append(rec)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)
    print(f"[bench] {benchmark}/{metric} = {value:.6g} {unit}")
    return rec
