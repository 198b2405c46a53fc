"""DeepTrust's event contracts: typed event models and the JSON Schema files derived from them.

The files (``schemas/*.schema.json``) are what consumers in other languages read; the
pydantic models in :mod:`deeptrust.schemas.events` are what the Python code uses. A test keeps the
two identical and checks every file against the frozen revisions in ``schemas/released``.
"""
