"""Writing GGUF files with the `gguf` package, all or nothing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable


def write_gguf(path: str | os.PathLike[str], arch: str, fill: Callable[[Any], None]) -> None:
    """Write a GGUF file with the `gguf` package: `fill(writer)` adds metadata and tensors. Written
    under a temporary name and renamed, so a failed write never leaves a partial file."""
    import gguf

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), arch)
    try:
        fill(writer)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    os.replace(tmp, path)
