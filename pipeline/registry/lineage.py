"""Where a version comes from, as tags: the data, params, commit and code it was trained from, and where its
data is kept (with the command that restores it)."""

from __future__ import annotations

import subprocess

from .. import __version__
from ..config import Settings
from ..data.windowset import WindowSet
from ..modeling.train import code_version


def lineage(ws: WindowSet, settings: Settings) -> dict:
    return {
        "data_md5": ws.meta.data_md5 or "unknown",
        "params_hash": settings.fingerprint(),
        "git_commit": git_commit(),
        "cellcast_version": __version__,
        "code_version": code_version(),
        "dataset": ws.meta.name,
    }


def data_tags(kept) -> dict:
    """Where the data of a version is kept (versioning.keep's DataVersion): its md5 and the DVC store(s) holding it."""
    where = "local DVC cache" + (f" + DVC remote '{kept.remote}'" if kept.remote else f" only ({kept.note})")
    return {"data_version": kept.md5, "data_kept": where}


def data_command(dataset: str, version: int) -> str:
    """The command that restores the data version `version` of the dataset's model was trained on."""
    return f"cellcast data get {dataset} --version {version} --out DIR"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
