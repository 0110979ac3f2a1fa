"""igpt-codec on Ray Data: compress and decompress image collections as sharded datasets.

`compress_dataset` reads a directory tree of images (key = path relative to the root)
or a Parquet table of encoded images (an id column and a bytes column), codes them in
an actor pool (`map_batches`, one onnxruntime session per actor, 1 intra-op thread by
default) and writes shards plus an index (`datasets.shards` describes the layout).
`decompress_dataset` decodes a whole dataset the same way, shard by shard, into PNGs or
token arrays; one image is read back by key with `datasets.shards.get_image`, no Ray.

Ray is imported only inside these functions (install the `scale` extra), and the runner
only on first use of a name below, so `import igpt_codec.datasets.shards` costs nothing
and the codec's own commands never load Ray. See docs/scale.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from igpt_codec.datasets.runner import (
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


def __getattr__(name: str) -> Any:
    """The runner's names, imported on first use (it loads the codec's model runtime)."""
    if name not in __all__:
        raise AttributeError(f"module 'igpt_codec.datasets' has no attribute {name!r}")
    from igpt_codec.datasets import runner

    return getattr(runner, name)
