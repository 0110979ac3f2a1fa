"""What a stream may ask of the decoder (DecodeLimits), and the budget that charges
each record against it before any model work on it.

A record costs the model one step per token whatever its size in bytes (an empty
payload decodes to a whole image), so the limits bound work, not bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from igpt_codec.format.errors import DecodeLimitError
from igpt_codec.format.records import FullImageHeader, RecordHeader


@dataclass(frozen=True)
class DecodeLimits:
    """Work a stream may ask of the decoder, as zstd bounds its window.

    A record costs the model one step per token whatever its size in bytes (an empty
    payload decodes to a whole image), so a server that decodes untrusted streams sets
    these. The defaults are far above any honest single file (65,536 images of 32x32)
    and still bound a hostile one to about three hours of one core.
    """

    max_images: int = 1 << 16
    max_tokens: int = 1 << 26


class Budget:
    """Images and tokens of one stream, charged against DecodeLimits record by record.

    `charge` is called exactly once per record, from its header, before any model work
    on it; it raises DecodeLimitError naming the record and the limit to raise.
    """

    def __init__(self, limits: DecodeLimits) -> None:
        self.limits = limits
        self.images = 0
        self.tokens = 0

    def charge(self, header: RecordHeader | FullImageHeader, index: int) -> None:
        self.images += 1
        self.tokens += header.token_count
        if self.images > self.limits.max_images:
            raise DecodeLimitError(
                f"record {index}: the stream holds more than {self.limits.max_images} images "
                "(the decoder's limit; raise DecodeLimits.max_images to decode it)"
            )
        if self.tokens > self.limits.max_tokens:
            raise DecodeLimitError(
                f"record {index}: the stream holds more than {self.limits.max_tokens} tokens "
                "(the decoder's limit; raise DecodeLimits.max_tokens to decode it)"
            )
