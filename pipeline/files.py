"""Writing files so that a reader never sees half of one, and the hashes recorded about them."""
from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path


def utc_stamp() -> str:
    """A sortable UTC time stamp for folder and file names (microseconds: two in one second differ)."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def _replace_into(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)  # atomic: readers see the old file or the new one
    return path


def write_json(path: str | Path, obj) -> Path:
    return _replace_into(Path(path), lambda tmp: tmp.write_text(json.dumps(obj, indent=2, default=str)))


def write_parquet(frame, path: str | Path) -> Path:
    return _replace_into(Path(path), lambda tmp: frame.to_parquet(tmp, index=False))


def _digest(path: str | Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def md5_file(path: str | Path) -> str:
    """The md5 of a file's bytes: the hash DVC 3 records for it (data_md5 tags point into dvc.lock)."""
    return _digest(path, "md5")


def sha256_file(path: str | Path) -> str:
    """The sha256 of a file's bytes: the provenance ingest records for an input."""
    return _digest(path, "sha256")
