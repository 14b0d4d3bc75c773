"""Fake provider and automator plugins for Shoal's tests (see setup.py)."""
