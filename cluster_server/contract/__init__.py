"""The API's contract, declared once: which query and path parameters each route accepts, the
size of a body it reads, and the shape limits of JSON bodies.

The server enforces these declarations before a view runs (``check_request``) and the OpenAPI
document is generated from the same declarations (``api/meta.py``), so no rule is written twice.
"""
