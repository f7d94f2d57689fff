"""The machine's load average before and after a benchmark, so a loaded run can be told from a quiet one.

    from loadavg import load_reported   # bench/ is the script's folder, first on sys.path

    with load_reported():
        main()
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


def load_average() -> str:
    """``1 5 15``-minute load averages, and how many CPUs share them."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1, 5, 15 min; {os.cpu_count()} CPUs)"


@contextmanager
def load_reported() -> Iterator[None]:
    """Print the load average when the benchmark starts and when it ends (also when it fails)."""
    print(f"load average before: {load_average()}", flush=True)
    try:
        yield
    finally:
        print(f"load average after:  {load_average()}", flush=True)
