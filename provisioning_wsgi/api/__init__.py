"""The REST API on the admin port, under /api/v1/ (see app.py and the OpenAPI document)."""
