"""Alembic migrations of the server schema, shipped in the package and run programmatically."""
