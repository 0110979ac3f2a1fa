"""The coding core's leaf layer: range coder, frequency tables, adaptive mixer, palette, images.

Imports only `igpt_codec.format` below it (docs/architecture.md).
"""
