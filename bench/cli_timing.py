"""Whole-process cost of the command line: `cli.py compress` and `decompress` on one image.

This is what a user waits for: interpreter start, imports, bundle hashing,
session creation, tokenizing, the step loop and file output. Each run is a fresh
subprocess.

Peak memory is the child's own high-water mark (VmHWM in /proc/PID/status), read
by a thread every few milliseconds while the parent blocks in wait4, or, when the
child forks workers (full-resolution chains, pipelines/parallel.py), the highest
sampled sum of the proportional set size (Pss) of the child and its descendants,
whichever is larger: summing their VmHWM would count the pages a fork shares with
its parent once per process. The kernel's ru_maxrss for a child is no use here: it
keeps the size the child had before exec, i.e. a copy of this (large) benchmark
process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.timing import median

REPO_ROOT = Path(__file__).resolve().parents[1]
CLI = REPO_ROOT / "cli.py"
POLL_S = 0.005
TREE_POLL_S = 0.1
TREE_POLL_SHARE = 50
"""The process tree's Pss is read at most every TREE_POLL_S, and never more often than
TREE_POLL_SHARE times the last read took: reading smaps_rollup walks a process's page
tables (milliseconds for a large one), and at POLL_S the watcher took a quarter of a core
from the workers it measured."""
IMPORTS_ONLY = "import cli, igpt_codec.api, igpt_codec.runtime"
"""The baseline: interpreter start and the run-time imports (numpy, Pillow, onnxruntime,
click), without a bundle or a model step; what compress/decompress spend beyond it is theirs."""


def vm_hwm(pid: int) -> int | None:
    """Peak resident bytes of a live process (Linux), None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


def descendants(pid: int) -> list[int]:
    """The live descendants of a process (Linux: /proc/PID/task/TID/children)."""
    found, queue = [], [pid]
    while queue:
        parent = queue.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                text = Path(f"/proc/{parent}/task/{task}/children").read_text()
            except OSError:
                continue
            for child in text.split():
                found.append(int(child))
                queue.append(int(child))
    return found


def pss(pid: int) -> int:
    """Proportional resident bytes of a live process (shared pages split among sharers)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


class PeakWatcher(threading.Thread):
    """Polls a child's VmHWM until stopped (the mark only grows, so the last read wins),
    and, while it has descendants, the summed Pss of its process tree."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        next_tree = 0.0
        while not self._stop_event.is_set():
            value = vm_hwm(self.pid)
            if value is not None:
                self.peak = max(self.peak, value)
                now = time.perf_counter()
                if now >= next_tree:
                    workers = descendants(self.pid)
                    if workers:
                        tree = pss(self.pid) + sum(pss(worker) for worker in workers)
                        self.peak = max(self.peak, tree)
                    took = time.perf_counter() - now
                    next_tree = now + max(TREE_POLL_S, TREE_POLL_SHARE * took)
            time.sleep(POLL_S)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak


def run_child(
    args: list[str], cwd: Path = REPO_ROOT, env: dict[str, str] | None = None
) -> tuple[float, int, int, str, float]:
    """(wall seconds, exit status, peak RSS in bytes, stderr tail, CPU seconds) of one
    subprocess run in `cwd` (with `env`, default this process's); CPU = the child's user +
    system time, what it cost apart from waiting for the CPU on a shared machine."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        child = subprocess.Popen(
            args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
        )
        watcher = PeakWatcher(child.pid)
        watcher.start()
        try:
            _, status, usage = os.wait4(child.pid, 0)
        except BaseException:
            child.kill()
            child.wait()
            raise
        finally:
            peak = watcher.stop()
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read()[-2000:].decode(errors="replace")
    if not peak:  # no /proc: fall back to the kernel's figure, inflated as described above
        peak = usage.ru_maxrss * 1024
    return seconds, child.returncode, peak, tail, usage.ru_utime + usage.ru_stime


def time_cli(image: Path, model: Path, size: int, runs: int) -> dict[str, Any]:
    """Median wall time and peak RSS of the imports baseline, compress and decompress."""
    result: dict[str, Any] = {"image": str(image), "size": size, "runs": runs, "threads": None}
    with tempfile.TemporaryDirectory(prefix="bench_cli_") as tmp:
        stream = Path(tmp) / "image.igpt"
        png = Path(tmp) / "image.png"
        commands = {
            "imports": [sys.executable, "-c", IMPORTS_ONLY],
            "compress": [
                *(sys.executable, str(CLI), "compress", str(image)),
                *("-o", str(stream), "--model", str(model), "--size", str(size), "-q", "-f"),
            ],
            "decompress": [
                *(sys.executable, str(CLI), "decompress", str(stream)),
                *("-o", str(png), "--model", str(model), "-q", "-f"),
            ],
        }
        for name, args in commands.items():
            times, peaks, cpu = [], [], []
            for _ in range(max(1, runs)):
                seconds, status, peak, tail, cpu_seconds = run_child(args)
                if status != 0:
                    raise RuntimeError(f"cli.py {name} exited with {status}: {tail.strip()}")
                times.append(seconds)
                peaks.append(peak)
                cpu.append(cpu_seconds)
            result[name] = {
                "median_seconds": median(times),
                "median_cpu_seconds": median(cpu),
                "seconds": times,
                "peak_rss_bytes": max(peaks),
            }
            if name != "imports":
                result[name]["tokens_per_s"] = size * size / median(times)
        result["stream_bytes"] = stream.stat().st_size
    return result
