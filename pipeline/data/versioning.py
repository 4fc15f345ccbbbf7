"""The one module that talks to DVC: the hash DVC gives a file, what dvc.lock recorded, the repository's status;
the datasets of the pipeline (sources.yaml, read by dvc.yaml's foreach) and the record of stages run outside
`dvc repro`; the data a model trained on, kept in the DVC cache and remote by md5, fetched back and spared by
garbage collection. The stages themselves are in dvc.yaml and call the `cellcast` CLI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import ConfigError, DataVersionError, NotFoundError
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


# ---- the datasets of the pipeline: sources.yaml, which dvc.yaml's `foreach` reads
#
# Bundled and user datasets go through the same stages (ingest@NAME -> validate@NAME -> window@NAME). Each entry
# says how to ingest the dataset again (`cellcast ingest --recorded NAME` reads it), the file it comes from (the
# stage's dependency: `dvc status` names it when it changes) and the params.yaml key of its overrides.

SOURCES_FILE = "sources.yaml"
SOURCES_HEADER = (
    "# The datasets dvc.yaml's ingest / validate / window stages run, one entry each (`cellcast ingest` adds a\n"
    "# user's file here the first time it ingests it). source: the file the stage depends on (`dvc status` names\n"
    "# it when it changes); params: the params.yaml key of its overrides; ingest: how `cellcast ingest --recorded\n"
    "# NAME` reads it again. Bundled datasets depend on their loader. docs/dvc.md\n"
)


def pipeline_root(start: str | Path | None = None) -> Path | None:
    """The DVC project holding the cellcast pipeline (.dvc/ and dvc.yaml reading sources.yaml) at or above `start`
    (default: the working directory); None outside one (a plain folder with params.yaml: nothing is versioned)."""
    root = _root(Path(start or Path.cwd()))
    return root if (root / ".dvc").is_dir() and (root / SOURCES_FILE).is_file() else None


def read_sources(root: str | Path) -> dict:
    """sources.yaml's entries {name: {source, params, ingest}}."""
    path = Path(root) / SOURCES_FILE
    try:
        body = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    return dict(body.get("sources") or {})


def source_entry(name: str, root: str | Path | None = None) -> dict | None:
    root = pipeline_root(root)
    return None if root is None else read_sources(root).get(name)


def stage_source(path: str | Path, root: Path) -> str:
    """How a stage names its source file: relative to the repository when it lies inside, else absolute."""
    p = Path(path).resolve()
    return p.relative_to(root.resolve()).as_posix() if p.is_relative_to(root.resolve()) else str(p)


def register_source(name: str, source: str | Path, ingest: dict, overrides: bool, root: Path) -> bool:
    """Add or update dataset `name` in sources.yaml. source: the file its ingest stage depends on; overrides:
    params.yaml has datasets.NAME (else the stages depend on the whole `datasets` section: DVC refuses a params key
    that is missing). Returns whether the file changed."""
    entries = read_sources(root)
    entry = {
        "source": stage_source(source, root),
        "params": f"datasets.{name}" if overrides else "datasets",
        "ingest": ingest,
    }
    if entries.get(name) == entry:
        return False
    entries[name] = entry
    body = yaml.safe_dump({"sources": entries}, sort_keys=False, default_flow_style=None, width=120)
    tmp = Path(root) / f".{SOURCES_FILE}.tmp"
    tmp.write_text(SOURCES_HEADER + body)
    tmp.replace(Path(root) / SOURCES_FILE)
    return True


def inside_stage() -> bool:
    """Whether this process is a DVC stage's command (`dvc repro` records the outputs itself, holding the lock)."""
    import os

    return bool(os.environ.get("DVC_STAGE"))


def commit(name: str, stages: list[str], root: str | Path | None = None) -> list[str]:
    """Record what `cellcast` wrote for dataset `name` outside `dvc repro` (a command, a flow): dvc.lock gets the
    hashes of these stages' dependencies and outputs, the DVC cache their bytes. Nothing when this is no DVC
    pipeline, the dataset is not in sources.yaml, or a DVC stage is running this. Returns the stages recorded."""
    root = pipeline_root(root)
    if root is None or inside_stage() or name not in read_sources(root):
        return []
    from dvc.repo import Repo

    done = []
    with Repo(str(root)) as repo:
        for stage in stages:
            repo.commit(f"{root / 'dvc.yaml'}:{stage}@{name}", force=True)
            done.append(f"{stage}@{name}")
    return done


# ---- the data a model was trained on: kept in the DVC cache by its md5, pushed to the remote, fetched back


@dataclass
class DataVersion:
    """What keep() did with a dataset's validated file: its md5 (a model's data_md5), whether it is in the local
    cache, the remote it was pushed to (None: not pushed, `note` says why)."""

    md5: str
    path: str
    cached: bool
    remote: str | None = None
    note: str = ""


def _hash_info(md5: str):
    from dvc_data.hashfile.hash_info import HashInfo

    return HashInfo("md5", md5)


def _default_remote(repo, remote: str | None) -> str | None:
    return remote or repo.config.get("core", {}).get("remote") or None


def keep(path: str | Path, push: str = "auto", remote: str | None = None, root: str | Path | None = None):
    """Put the bytes of `path` into the DVC cache under their md5 (whatever dvc.lock says now: a re-ingest or a
    later run replaces the file, never the cached copy) and push them to `remote` (default: the default remote).
    push: auto (push when a remote is configured; a failure is noted, not raised) | always (a failure raises
    DataVersionError) | never. None outside a DVC pipeline."""
    root = pipeline_root(root)
    if root is None:
        return None
    from dvc.fs import LocalFileSystem
    from dvc.repo import Repo

    path = Path(path)
    md5 = data_hash(path)
    with Repo(str(root)) as repo:
        odb = repo.cache.local
        if not odb.exists(md5):
            odb.add(str(path.resolve()), LocalFileSystem(), md5)
        kept = DataVersion(md5, str(path), cached=odb.exists(md5))
        if push == "never":
            kept.note = "versioning.push: never"
            return kept
        name = _default_remote(repo, remote)
        if name is None:
            kept.note = "no DVC remote configured"
        else:
            try:
                result = repo.cloud.push([_hash_info(md5)], remote=name)
                if result.failed:
                    raise OSError(f"{len(result.failed)} object(s) not transferred")
                kept.remote = name
            except Exception as e:  # an unreachable or refusing remote: the local cache still holds the bytes
                kept.note = f"push to DVC remote '{name}' failed: {' '.join(str(e).split())[:200]}"
        if push == "always" and kept.remote is None:
            raise DataVersionError(f"{path}: not pushed ({kept.note}); versioning.push is 'always'")
    return kept


def fetch(md5: str, dst: str | Path, remote: str | None = None, root: str | Path | None = None) -> Path:
    """The bytes whose md5 is `md5`, from the local DVC cache or else the remote (default: the default one), written
    to `dst` and checked against the md5. NotFoundError when neither holds them."""
    root = pipeline_root(root)
    if root is None:
        raise NotFoundError(f"{Path.cwd()}: not inside a DVC project with {SOURCES_FILE}: no data versions here")
    import shutil

    from dvc.repo import Repo

    dst = Path(dst)
    with Repo(str(root)) as repo:
        odb = repo.cache.local
        where = "the local DVC cache"
        if not odb.exists(md5):
            name = _default_remote(repo, remote)
            if name is None:
                raise NotFoundError(f"data version {md5}: not in the local DVC cache and no DVC remote is configured")
            try:
                repo.cloud.pull([_hash_info(md5)], remote=name)
            except Exception as e:
                raise NotFoundError(f"data version {md5}: DVC remote '{name}' could not be read ({e})") from None
            if not odb.exists(md5):
                raise NotFoundError(f"data version {md5}: neither in the local DVC cache nor on DVC remote '{name}'")
            where = f"DVC remote '{name}'"
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.copyfile(odb.oid_to_path(md5), tmp)
    got = data_hash(tmp)
    if got != md5:
        tmp.unlink()
        raise DataVersionError(f"data version {md5}: the copy from {where} has md5 {got}; nothing written to {dst}")
    tmp.replace(dst)
    return dst


def collect_garbage(
    keep_md5: set[str],
    cloud: bool = False,
    remote: str | None = None,
    dry: bool = False,
    root: str | Path | None = None,
) -> dict:
    """`dvc gc --workspace` that also keeps `keep_md5` (the data every registered model version names): removes
    from the local cache (and, with `cloud`, from the remote) every object neither the workspace's dvc.lock nor
    those md5s use. Returns {"local": removed, "remote": removed or None, "kept": len(keep_md5)}."""
    root = pipeline_root(root)
    if root is None:
        raise NotFoundError(f"{Path.cwd()}: not inside a DVC project with {SOURCES_FILE}: no cache to collect")
    from dvc.repo import Repo
    from dvc_data.hashfile.gc import gc as object_gc

    with Repo(str(root)) as repo, repo.lock:
        used = set()
        for ids in repo.used_objs(force=True).values():
            used.update(ids)
        used.update(_hash_info(m) for m in keep_md5)
        # each dataset's source file (a user's CSV, a query's snapshot) as its last recorded ingest read it
        lock, sources = read_lock(root), read_sources(root)
        for name, entry in sources.items():
            for d in (lock.get(f"ingest@{name}") or {}).get("deps") or []:
                if d.get("path") == entry.get("source") and d.get("md5"):
                    used.add(_hash_info(d["md5"]))
        removed = {"local": object_gc(repo.cache.local, used, dry=dry), "remote": None, "kept": len(keep_md5)}
        if cloud:
            odb = repo.cloud.get_remote_odb(_default_remote(repo, remote), "gc")
            removed["remote"] = object_gc(odb, used, dry=dry)
    return removed
