"""What the numbers were measured on: CPU, cores, memory, load, library versions.

Speeds mean little without the machine, and on a shared box the load average
at the start and the end says whether other work was competing for the cores.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

CPU_FLAGS = (
    *("sse4_2", "avx", "avx2", "fma", "f16c"),
    *("avx512f", "avx512bw", "avx512_vnni", "amx_tile"),
)
"""Instruction sets that change which kernels onnxruntime and numpy pick."""

PACKAGES = (
    "numpy",
    "onnxruntime",
    "pillow",
    "brotli",
    "zstandard",
    "pillow-jxl-plugin",
    "constriction",
    "matplotlib",
    "psutil",
    "torch",
)


def _cpuinfo() -> dict[str, Any]:
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return {"model": platform.processor() or platform.machine(), "flags": []}
    model, flags = None, set()
    for line in path.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return {"model": model, "flags": [f for f in CPU_FLAGS if f in flags]}


def _memory_bytes() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except ImportError:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _physical_cores() -> int | None:
    try:
        import psutil

        return psutil.cpu_count(logical=False)
    except ImportError:
        return None


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    versions["numpy_runtime"] = np.__version__
    versions["onnxruntime_runtime"] = ort.__version__
    return versions


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def describe_machine() -> dict[str, Any]:
    """The machine description stored in results.json."""
    cpu = _cpuinfo()
    return {
        "cpu_model": cpu["model"],
        "cpu_flags": cpu["flags"],
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "physical_cores": _physical_cores(),
        "memory_bytes": _memory_bytes(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "nice": os.nice(0) if hasattr(os, "nice") else None,
        "load_average_start": load_average(),
        "versions": _versions(),
        "onnxruntime_providers": ort.get_available_providers(),
    }
