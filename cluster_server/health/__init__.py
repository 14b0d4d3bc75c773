"""Health, supervision, node facts, drift and metrics: what Shoal knows of a cluster after its
operation ended. ``monitor.Monitor`` is the loop the server runs; the rest are its parts."""
