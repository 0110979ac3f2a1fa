"""The model runtime: the export/run-time contract, bundles, the search for them, sessions,
the KV cache, and the float and exact runners that turn tokens into frequency tables.

Part of the coding core; imports `igpt_codec.core` and `igpt_codec.format` only
(docs/architecture.md).
"""
