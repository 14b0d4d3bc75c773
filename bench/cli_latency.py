"""CLI latency: median wall time of ``shoal template list`` against a running server.

Prints the median of 20 runs beside ``python -c pass`` measured in the same run, so the figure
can be read as a ratio on a noisy machine. Target: median under 0.3 s.

    .venv/bin/python bench/cli_latency.py
"""

import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHOAL = str(pathlib.Path(sys.executable).with_name("shoal"))
RUNS = 20


def median_time(argv, env):
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, SHOAL_HOME=home)
        subprocess.run([SHOAL, "server", "start"], env=env, check=True, stdout=subprocess.DEVNULL)
        try:
            subprocess.run([SHOAL, "catalog", "import", str(ROOT / "tests/data/coopr-catalog")],
                           env=env, check=True, capture_output=True)
            baseline = median_time([sys.executable, "-c", "pass"], env)
            listing = median_time([SHOAL, "template", "list"], env)
        finally:
            subprocess.run([SHOAL, "server", "stop"], env=env, stdout=subprocess.DEVNULL)
    print(f"python -c pass         median of {RUNS}: {baseline * 1000:7.1f} ms")
    print(f"shoal template list    median of {RUNS}: {listing * 1000:7.1f} ms "
          f"({listing / baseline:.1f}x python startup; target < 300 ms)")


if __name__ == "__main__":
    main()
