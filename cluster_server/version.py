"""Shoal version, read by setup.py and ``shoal --version``."""

VERSION = "0.1.0"
