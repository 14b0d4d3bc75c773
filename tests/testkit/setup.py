"""shoal-testkit: a third-party plugin package written for Shoal's tests.

A fault-injecting ``fake`` provider (its "cloud" is a JSON file in SHOAL_HOME) and a ``fake``
automator (logs every action, can sleep or fail). Installed like any other plugin package
(``pip install -e tests/testkit``); Shoal finds it through its entry points alone.
"""

from setuptools import setup

setup(
    name="shoal-testkit",
    version="0.1.0",
    description="Fake provider and automator for testing Shoal",
    packages=["shoal_testkit"],
    python_requires=">=3.10",
    entry_points={
        "shoal.providers": ["fake = shoal_testkit.provider:FakeProvider"],
        "shoal.automators": ["fake = shoal_testkit.automator:FakeAutomator"],
    },
)
