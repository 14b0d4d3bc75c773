"""Managed database plugins (the ``shoal.databases`` namespace)."""
