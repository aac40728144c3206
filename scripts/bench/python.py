"""The Python half of scripts/bench/python.sh: `import kgenv` time, and the same no-op
operations the Rust bench (crates/kgenv-py/benches/overhead.rs) times, through the
bindings. Prints a table with the ratio Python / Rust for each.

Usage: python scripts/bench/python.py '<json line printed by the Rust bench>'
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from typing import Callable


def median_us(n: int, f: Callable[[], object]) -> float:
    for _ in range(max(1, n // 10)):
        f()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def process_ms(code: str, runs: int = 21) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def import_cumulative_us(runs: int = 11) -> float:
    """Median of `-X importtime`'s cumulative figure for `kgenv` (interpreter start excluded)."""
    found = []
    for _ in range(runs):
        r = subprocess.run([sys.executable, "-X", "importtime", "-c", "import kgenv"], capture_output=True, text=True, check=True)
        for line in r.stderr.splitlines():
            parts = [p.strip() for p in line.split("|")]
            if len(parts) == 3 and parts[2] == "kgenv":
                found.append(int(parts[1]))
    if not found:
        raise RuntimeError("kgenv not found in -X importtime output")
    return statistics.median(found)


def main() -> None:
    rust = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    os.environ["KGENV_HOME"] = tempfile.mkdtemp(prefix="kgenv-bench-")
    import kgenv
    from kgenv import _kgenv
    from kgenv.testing import MockWorld

    bare = process_ms("pass")
    with_kgenv = process_ms("import kgenv")
    cumulative = import_cumulative_us()

    def py_noop() -> None:
        pass

    # Batches, so the clock's own cost does not swamp calls that do nothing.
    noop_ns = min(timeit.repeat(_kgenv.noop, number=1_000_000, repeat=5)) * 1e3
    py_noop_ns = min(timeit.repeat(py_noop, number=1_000_000, repeat=5)) * 1e3

    world = MockWorld()

    def build() -> kgenv.Env:
        return kgenv.Env(
            "bench",
            target="local",
            image=kgenv.Image(),
            container=kgenv.Container(gpus="none"),
            data=[kgenv.Data("titanic")],
            backends=world,
        )

    env = build()
    env.up(progress=False)
    build_us = median_us(2_000, build)
    plan_us = median_us(300, lambda: env.plan(progress=False))
    up_us = median_us(300, lambda: env.up(progress=False))

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"kgenv {kgenv.__version__}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load:.1f}")
    print(
        f"import kgenv: {cumulative / 1000:.1f} ms (-X importtime cumulative, median of 11); "
        f"whole process {with_kgenv:.1f} ms vs {bare:.1f} ms without the import (median of 21)"
    )
    print(
        f"no-op call into Rust: _kgenv.noop() {noop_ns:.0f} ns; a Python no-op function {py_noop_ns:.0f} ns; "
        f"the same call in Rust {rust.get('noop_ns', float('nan')):.1f} ns"
    )
    rows = [
        ("build + validate spec", build_us, rust.get("build_us", float("nan"))),
        ("plan (nothing to do)", plan_us, rust.get("plan_us", float("nan"))),
        ("up (already as specified)", up_us, rust.get("up_us", float("nan"))),
    ]
    print(f"{'operation (median)':<28}{'python µs':>12}{'rust µs':>12}{'ratio':>10}{'overhead µs':>14}")
    for name, py, rs in rows:
        ratio = py / rs if rs else float("nan")
        print(f"{name:<28}{py:>12.1f}{rs:>12.1f}{ratio:>9.1f}x{py - rs:>14.1f}")


if __name__ == "__main__":
    main()
