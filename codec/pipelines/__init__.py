"""Pipelines: tokens to records and back, for thumbnails and full-resolution images,
and the stream-level dispatch between them.

Imports the coding core and the format only (docs/architecture.md).
"""
