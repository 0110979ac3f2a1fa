"""Small file helpers shared by the API and the CLI; standard library only, so `info`
stays free of numpy, Pillow and onnxruntime."""

from __future__ import annotations

import io
import os
import stat
from typing import BinaryIO


def regular_file_size(handle: BinaryIO) -> int | None:
    """The size of a regular file opened at its start (None for pipes, devices, ...).

    The stream reader checks every length field against it before reading.
    """
    try:
        st = os.fstat(handle.fileno())
        at_start = handle.tell() == 0
    except (OSError, AttributeError, ValueError, io.UnsupportedOperation):
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) and at_start else None
