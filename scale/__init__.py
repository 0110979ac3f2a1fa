"""igpt-codec on Ray Data: compress and decompress image collections as sharded datasets.

`compress_dataset` reads a directory tree of images (key = path relative to the root)
or a Parquet table of encoded images (an id column and a bytes column), codes them in
an actor pool (`map_batches`, one onnxruntime session per actor, 1 intra-op thread by
default) and writes shards plus an index (`codec.shards` describes the layout).
`decompress_dataset` decodes a whole dataset the same way, shard by shard, into PNGs or
token arrays; one image is read back by key with `codec.shards.get_image`, no Ray needed.

Ray is imported only inside these functions (install the `scale` extra), so `import
scale` costs nothing and the codec's own commands never load it. See docs/scale.md.
"""

from __future__ import annotations

from scale.runner import (
    CompressReport,
    DatasetError,
    DecompressReport,
    compress_dataset,
    decompress_dataset,
)

__all__ = [
    "CompressReport",
    "DatasetError",
    "DecompressReport",
    "compress_dataset",
    "decompress_dataset",
]
