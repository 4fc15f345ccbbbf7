"""Writing files so that a reader never sees half of one, and the hashes recorded about them; what processes
of one machine share: locks, and telling whether the process that owns a run is still there."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def utc_stamp() -> str:
    """A sortable UTC time stamp for folder and file names (microseconds: two in one second differ)."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def _replace_into(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a temporary name of this writer's own: two processes writing one file must not share (and move)
    # each other's half-written copy
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        write(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)  # atomic: readers see the old file or the new one
    return path


def write_json(path: str | Path, obj) -> Path:
    return _replace_into(Path(path), lambda tmp: tmp.write_text(json.dumps(obj, indent=2, default=str)))


def write_parquet(frame, path: str | Path) -> Path:
    return _replace_into(Path(path), lambda tmp: frame.to_parquet(tmp, index=False))


@contextmanager
def parquet_groups(path: str | Path) -> Iterator[Callable]:
    """`with parquet_groups(p) as add: add(frame)...`: each frame becomes one row group of one Parquet file
    (the columns and types of the first), published atomically when the block ends without an error; on an
    error, or when no frame was added, nothing is written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    state: dict[str, Any] = {"writer": None, "schema": None}  # the ParquetWriter and schema of the first frame

    def add(frame) -> None:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if state["writer"] is None:
            state["schema"] = table.schema
            state["writer"] = pq.ParquetWriter(tmp, table.schema)
        else:
            table = table.cast(state["schema"])
        state["writer"].write_table(table, row_group_size=max(len(table), 1))

    try:
        yield add
        if state["writer"] is not None:
            state["writer"].close()
            os.replace(tmp, path)
    except BaseException:
        if state["writer"] is not None:
            state["writer"].close()
        tmp.unlink(missing_ok=True)
        raise


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


def sha256_tree(path: str | Path) -> str:
    """The sha256 of a folder's files: each one's path relative to it and its bytes, in path order."""
    root = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + _digest(f, "sha256").encode())
    return h.hexdigest()


@contextmanager
def exclusive(path: str | Path, waiting: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on file `path` for the block, across processes of this machine; if another
    holds it, call `waiting(who holds it)` once and wait. The kernel drops a lock when its holder dies,
    kill -9 included, so a crash never leaves it stuck. (No fcntl, as on Windows: no lock.)"""
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting is not None:
                waiting(os.pread(fd, 512, 0).decode(errors="replace").strip() or "another process")
            fcntl.flock(fd, fcntl.LOCK_EX)
        me = f"process {os.getpid()} on {socket.gethostname()} since {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC"
        os.ftruncate(fd, 0)
        os.pwrite(fd, me.encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _process_started(pid: int) -> str | None:
    """When process `pid` started (a pid is reused once its process is gone); None when there is none."""
    try:
        import psutil

        return f"{psutil.Process(pid).create_time():.2f}"
    except ImportError:  # pragma: no cover - psutil comes with dvc and distributed
        pass
    except Exception:  # noqa: BLE001 - NoSuchProcess, AccessDenied...
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return "unknown"


def owner() -> dict[str, str]:
    """This process, as a run records its owner: host, pid, and when the process started."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": str(pid), "process_started": _process_started(pid) or "unknown"}


def owner_gone(recorded: dict) -> bool:
    """True when `recorded` (owner()'s keys) names a process of this host that is gone, or whose pid another
    process now has. A run of another host, or one with no owner recorded, is never judged gone."""
    if recorded.get("host") != socket.gethostname() or not str(recorded.get("pid", "")).isdigit():
        return False
    now = _process_started(int(recorded["pid"]))
    if now is None:
        return True
    was = recorded.get("process_started", "unknown")
    return "unknown" not in (now, was) and now != was
