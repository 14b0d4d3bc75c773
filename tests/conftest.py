"""Shared fixtures: a private SHOAL_HOME, a real server process, and the real ``shoal`` binary."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
# A copy of ../shared/reference/coopr-catalog, unchanged, so a clean clone can test with it.
COOPR = ROOT / "tests" / "data" / "coopr-catalog"
SHOAL = str(pathlib.Path(sys.executable).with_name("shoal"))


class Shoal:
    """Runs the installed ``shoal`` command against one SHOAL_HOME."""

    def __init__(self, home, default_catalog=False, **settings):
        self.home = pathlib.Path(home)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
        self.env["SHOAL_HOME"] = str(self.home)
        # Catalog tests start empty; cluster tests use the shipped catalog.
        self.env["SHOAL_DEFAULT_CATALOG"] = "1" if default_catalog else "0"
        self.env.update({f"SHOAL_{k.upper()}": str(v) for k, v in settings.items()})

    def run(self, *args, check=True, input=None, timeout=300):
        result = subprocess.run([SHOAL, *map(str, args)], env=self.env, capture_output=True,
                                text=True, input=input, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"shoal {' '.join(map(str, args))} exited "
                                 f"{result.returncode}\nstdout: {result.stdout}\n"
                                 f"stderr: {result.stderr}")
        return result

    def json(self, *args):
        return json.loads(self.run(*args, "-f", "json").stdout)

    def fails(self, *args, input=None):
        result = self.run(*args, check=False, input=input)
        assert result.returncode != 0, f"expected failure: {result.stdout}"
        assert "Traceback" not in result.stderr, result.stderr
        return result

    @property
    def url(self):
        return json.loads((self.home / "server.json").read_text())["url"]

    @property
    def token(self):
        return (self.home / "token").read_text().strip()


@pytest.fixture
def shoal(tmp_path):
    """A started server in a fresh SHOAL_HOME; stopped (and checked stopped) afterwards."""
    client = Shoal(tmp_path / "home")
    client.run("server", "start")
    yield client
    client.run("server", "stop")


@pytest.fixture
def coopr_catalog():
    return COOPR


def load_catalog_dir(path=COOPR):
    """{kind: {name: body}} read straight from a Coopr catalog directory."""
    from cluster_server.catalog import DIRS

    result = {}
    for kind, folder in DIRS.items():
        for item in sorted((pathlib.Path(path) / folder).glob("*.json")):
            body = json.loads(item.read_text())
            result.setdefault(kind, {})[body["name"]] = body
    return result
