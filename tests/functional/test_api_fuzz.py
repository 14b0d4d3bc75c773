"""The API's contract, fuzzed: schemathesis on a real server's OpenAPI document, every check,
the examples, coverage, fuzzing and stateful phases, a fixed seed. It must find nothing.

The run happens in a network namespace of its own (loopback only): the fuzzer may write catalog
entities that name any address, and nothing it makes may reach past this machine. A longer run:
``python tests/contract/fuzz.py --max-examples 100 --max-time 1800`` (README, "API contract").
"""

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="a network namespace needs root (tests/run.sh runs as root in CI)")
def test_schemathesis_finds_nothing():
    run = subprocess.run(
        ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', sys.executable,
         str(ROOT / "tests" / "contract" / "fuzz.py"), "--max-examples", "10", "--seed", "1",
         "--max-time", "150"],
        capture_output=True, text=True, timeout=600)
    report = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, report
    # "Test cases: N generated, N passed": every case generated passed, none errored.
    counts = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
    assert counts and counts[1] == counts[2] and int(counts[1]) > 1000, report
    assert "Failures:" not in run.stdout and "Errors:" not in run.stdout, report
