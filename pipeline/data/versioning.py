"""The one module that talks to DVC: the hash DVC gives a file, what dvc.lock recorded, and the
repository's status. The stages themselves are in dvc.yaml and call the `cellcast` CLI."""
from __future__ import annotations

from pathlib import Path

import yaml

from ..errors import ConfigError
from ..files import md5_file

LOCK_FILE = "dvc.lock"


def data_hash(path: str | Path) -> str:
    """The hash DVC 3 records for a file: the md5 of its bytes (DVC 2 normalised text line endings first;
    DVC 3 does not). Models are tagged with this value, so a version can be traced to a dvc.lock entry."""
    return md5_file(path)


def _root(start: Path) -> Path:
    """The nearest folder at or above `start` holding .dvc/ (where dvc.lock lives)."""
    start = start.resolve()
    for d in (start, *start.parents):
        if (d / ".dvc").is_dir():
            return d
    return start


def read_lock(root: str | Path | None = None) -> dict:
    """dvc.lock as a mapping {stage name: entry}; empty when the pipeline has not run yet."""
    lock = _root(Path(root or Path.cwd())) / LOCK_FILE
    if not lock.is_file():
        return {}
    try:
        body = yaml.safe_load(lock.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{lock}: not valid YAML ({str(e).splitlines()[0]})") from None
    return body.get("stages") or {}


def lock_hash(stage_out_path: str | Path, root: str | Path | None = None) -> str | None:
    """The md5 dvc.lock recorded for the output `stage_out_path` (relative to the repository root, or
    absolute), or None when no stage lists it (not run yet, or not an output)."""
    base = _root(Path(root or Path.cwd()))
    p = Path(stage_out_path)
    rel = (p.resolve() if p.is_absolute() else (base / p).resolve()).relative_to(base.resolve()).as_posix()
    for entry in read_lock(base).values():
        for out in entry.get("outs") or []:
            if Path(out.get("path", "")).as_posix() == rel:
                return out.get("md5")
    return None


def status(targets: list[str] | None = None, root: str | Path | None = None, with_deps: bool = True) -> dict:
    """What `dvc status` reports ({stage: changes}) for `targets` (default: every stage) and, with
    `with_deps`, the stages upstream of them; empty when all of them are up to date."""
    from dvc.repo import Repo

    base = _root(Path(root or Path.cwd()))
    # a bare stage name is looked up relative to the working directory: anchor it at this repository
    targets = [t if ":" in t else f"{base / 'dvc.yaml'}:{t}" for t in targets] if targets else targets
    with Repo(str(base)) as repo:
        found = repo.status(targets=targets, with_deps=with_deps)
    return {_stage_name(k, base): v for k, v in found.items()}


def _stage_name(key: str, base: Path) -> str:
    """DVC names a stage relative to the working directory ('../x/dvc.yaml:train'): the root pipeline's
    stages by their bare names, the way dvc.lock and `dvc status` in the root name them."""
    path, sep, name = key.rpartition(":")
    if sep and Path(path).resolve() == (base / "dvc.yaml").resolve():
        return name
    return key
