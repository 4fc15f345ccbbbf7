"""The model registry: versions, the aliases champion / challenger / previous, the lock that lets one process at a
time move a model's aliases, rollback, the data versions named on versions, and downloading a model."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)

from ...errors import NoChampionError, NotFoundError, RegistryBusyError
from ...files import owner_gone

if TYPE_CHECKING:  # pragma: no cover
    from ..promotion import Decision
from .runs import OWNER_TAGS, _owner, _str_tags
from .server import CHALLENGER, CHAMPION, PREVIOUS, STORE_DIR, _client, _reaching, _state

log = logging.getLogger(__package__)  # one name for the package: what MLflow said, under one logger


# ---------------------------------------------------------------- registry


@dataclass
class VersionInfo:
    name: str
    version: int
    run_id: str
    source: str
    tags: dict = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)


def _info(mv) -> VersionInfo:
    return VersionInfo(
        name=mv.name,
        version=int(mv.version),
        run_id=mv.run_id or "",
        source=mv.source or "",
        tags=dict(mv.tags or {}),
        aliases=sorted(mv.aliases or []),
    )


def _missing(e: MlflowException) -> bool:
    # the sqlite store reports a missing alias as INVALID_PARAMETER_VALUE "... not found"
    return e.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST) or (
        e.error_code == ErrorCode.Name(INVALID_PARAMETER_VALUE) and "not found" in e.message
    )


@_reaching
def register_version(model_name: str, model_uri: str, run_id: str, tags: dict | None = None) -> int:
    """A new version of `model_name` from a logged model URI (the registered model is created on first use),
    tagged with the process that registers it (host, pid, start time): the process that owes it a decision
    (`end_undecided` marks the version of one that died first)."""
    client = _client()
    try:
        client.get_registered_model(model_name)
    except MlflowException as e:
        if not _missing(e):
            raise
        try:
            client.create_registered_model(
                model_name, description="cellcast forecaster; aliases: champion, challenger, previous"
            )
        except MlflowException:  # a concurrent registration created it first
            client.get_registered_model(model_name)
    source = model_uri
    model_id = None
    if model_uri.startswith("models:/") and "@" not in model_uri and "/" not in model_uri[len("models:/") :]:
        # MLflow 3 logged-model URI: register its artifact location and keep the link to it
        model_id = model_uri[len("models:/") :]
        source = client.get_logged_model(model_id).artifact_location
    mv = client.create_model_version(
        model_name, source=source, run_id=run_id, tags=_str_tags({**(tags or {}), **_owner()}), model_id=model_id
    )
    return int(mv.version)


ABANDONED = "abandoned"  # promotion.decision of a version whose registering process died before deciding


@_reaching
def end_undecided(model_name: str) -> list[int]:
    """Mark ABANDONED the versions of `model_name` that carry no decision and whose registering process, on this
    host, is gone (killed between registering the version and recording its decision): tag promotion.decision and
    promotion.reason saying which process; their aliases are not touched (a version nobody compared with the
    champion earns none). Versions of live processes (a training still deciding), of other hosts, and those
    registered before versions recorded their owner are left alone. Returns the versions marked."""
    client = _client()
    marked = []
    for mv in client.search_model_versions(f"name = '{model_name}'"):
        tags = dict(mv.tags or {})
        if "promotion.decision" in tags:
            continue
        if not owner_gone({k[len("cellcast.") :]: v for k, v in tags.items() if k in OWNER_TAGS}):
            continue
        reason = (
            f"its training process {tags['cellcast.pid']}@{tags['cellcast.host']} ended before deciding "
            f"(killed?); found by process {os.getpid()}; train again for a decision"
        )
        client.set_model_version_tag(model_name, str(mv.version), "promotion.reason", reason)
        client.set_model_version_tag(model_name, str(mv.version), "promotion.decision", ABANDONED)
        marked.append(int(mv.version))
        log.warning(
            "%s v%s was registered by a process that is gone before deciding: marked %s",
            model_name,
            mv.version,
            ABANDONED,
        )
    return sorted(marked)


@_reaching
def get_alias(model_name: str, alias: str) -> VersionInfo | None:
    try:
        return _info(_client().get_model_version_by_alias(model_name, alias))
    except MlflowException as e:
        if _missing(e):
            return None
        raise


@_reaching
def get_version(model_name: str, version: int) -> VersionInfo:
    try:
        return _info(_client().get_model_version(model_name, str(int(version))))
    except MlflowException as e:
        if _missing(e):
            raise NotFoundError(f"model '{model_name}' has no version {version}") from None
        raise


@_reaching
def list_versions(model_name: str) -> list[VersionInfo]:
    """Every version of `model_name`, newest first; [] when the model does not exist."""
    client = _client()
    found = client.search_model_versions(f"name = '{model_name}'")
    # search results may omit aliases on some stores: read each version fully
    return sorted((get_version(model_name, int(mv.version)) for mv in found), key=lambda v: -v.version)


# ---- moving aliases: one process at a time per model
#
# MLflow moves one alias per request and has no compare-and-set, so two promotions at once (two machines training
# the same dataset, a rollback during a promotion) could interleave: both read champion v1, both write `previous`,
# one champion replaced without `previous` saying so. Every alias move of a model therefore happens inside a lock
# held in the registry itself: a registered model NAME.aliases-lock, created to take it (the store's unique name
# is the atomic test, on sqlite, PostgreSQL or through a server, across processes and hosts) and deleted to give it
# back. It carries its owner; one left by a process that died (same host) or older than ALIAS_LOCK_STALE_S is broken.

ALIAS_LOCK_SUFFIX = ".aliases-lock"
ALIAS_LOCK_STALE_S = 300
ALIAS_LOCK_WAIT_S = 120
ANY = object()  # apply_decision's expected_champion when the caller does not say


def _lock_owner(client: MlflowClient, lock: str) -> dict | None:
    try:
        return dict(client.get_registered_model(lock).tags or {})
    except MlflowException as e:
        if _missing(e):
            return None
        raise


def _lock_stale(tags: dict) -> bool:
    try:
        age = time.time() - float(tags.get("cellcast.acquired", "nan"))
    except ValueError:
        age = float("nan")
    gone = owner_gone({k[len("cellcast.") :]: v for k, v in tags.items() if k in OWNER_TAGS})
    return gone or not age < ALIAS_LOCK_STALE_S  # nan (no time recorded): stale


@contextmanager
def aliases_locked(model_name: str, wait_s: float = ALIAS_LOCK_WAIT_S) -> Iterator[None]:
    """Hold the lock on `model_name`'s aliases for the block (see above); wait for another holder up to wait_s."""
    client = _client()
    lock = f"{model_name}{ALIAS_LOCK_SUFFIX}"
    deadline = time.monotonic() + wait_s
    pause = 0.02
    while True:
        mine = {**_owner(), "cellcast.acquired": f"{time.time():.3f}"}
        try:
            client.create_registered_model(
                lock, tags=mine, description=f"held while the aliases of {model_name} move (cellcast); deleted after"
            )
            break
        except MlflowException as e:
            if e.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
        held = _lock_owner(client, lock)
        if held is None:
            continue  # given back meanwhile
        if _lock_stale(held):
            if _lock_owner(client, lock) == held:  # still that one: not a lock someone just took
                log.warning(
                    "breaking the lock on the aliases of %s left by process %s on %s",
                    model_name,
                    held.get("cellcast.pid"),
                    held.get("cellcast.host"),
                )
                try:
                    client.delete_registered_model(lock)
                except MlflowException as e:
                    if not _missing(e):
                        raise
            continue
        if time.monotonic() > deadline:
            raise RegistryBusyError(
                f"the aliases of '{model_name}' have been locked for {wait_s:.0f} s by process "
                f"{held.get('cellcast.pid')} on {held.get('cellcast.host')} (registered model "
                f"'{lock}'); try again once it is done, or delete that lock if its process is gone"
            )
        time.sleep(pause)
        pause = min(pause * 2, 0.5)
    try:
        yield
    finally:
        try:
            client.delete_registered_model(lock)
        except MlflowException as e:
            if not _missing(e):
                raise


@_reaching
def apply_decision(model_name: str, version: int, decision: Decision, expected_champion: Any = ANY) -> VersionInfo:
    """Record a promotion decision on `version` and move aliases accordingly (nothing else changes).

    expected_champion: the champion version the decision was made against (None: there was none). If another
    promotion or a rollback moved the champion since, the decision is stale: `version` is recorded as not promoted,
    saying why, and the champion stays (it was never compared with this version). A promoted version records the
    champion it replaced (tag promotion.replaced), which is what `previous` then names."""
    client = _client()
    get_version(model_name, version)  # NotFoundError before anything moves
    with aliases_locked(model_name):
        current = get_alias(model_name, CHAMPION)
        now = current.version if current is not None else None
        promote, reason = decision.promote, decision.reason
        if promote and expected_champion is not ANY and now != expected_champion and now != version:
            against = f"champion v{expected_champion}" if expected_champion is not None else "no champion"
            promote = False
            reason = (
                f"not promoted: it was decided against {against}, but the champion is now v{now} (moved "
                f"meanwhile); train again to compare with it. The decision was: {decision.reason}"
            )
        tags = {"promotion.decision": "promoted" if promote else "rejected", "promotion.reason": reason}
        tags.update({f"promotion.{k}": "" if v is None else v for k, v in (decision.metrics or {}).items()})
        if promote:
            tags["promotion.replaced"] = "" if now in (None, version) else now
        for k, v in tags.items():
            client.set_model_version_tag(model_name, str(version), k, str(v))
        client.set_registered_model_alias(model_name, CHALLENGER, str(version))
        if promote:
            if now is not None and now != version:
                client.set_registered_model_alias(model_name, PREVIOUS, str(now))
            client.set_registered_model_alias(model_name, CHAMPION, str(version))
    return get_version(model_name, version)


@_reaching
def set_version_tags(model_name: str, version: int, tags: dict) -> None:
    client = _client()
    for k, v in tags.items():
        client.set_model_version_tag(model_name, str(version), k, str(v))


@_reaching
def data_versions(suffix: str) -> dict[str, list[str]]:
    """The data every registered model version (of models named *suffix) was trained on: {data_md5: ['NAME vN']}."""
    client = _client()
    found: dict[str, list[str]] = {}
    for model in client.search_registered_models(max_results=1000):
        if not model.name.endswith(suffix):
            continue
        for mv in client.search_model_versions(f"name = '{model.name}'"):
            md5 = (mv.tags or {}).get("data_md5")
            if md5 and md5 != "unknown":
                found.setdefault(md5, []).append(f"{mv.name} v{mv.version}")
    return found


@_reaching
def rollback(model_name: str) -> VersionInfo:
    """`previous` becomes champion; the replaced champion becomes `previous` (a second rollback undoes it)."""
    client = _client()
    with aliases_locked(model_name):
        champion = get_alias(model_name, CHAMPION)
        previous = get_alias(model_name, PREVIOUS)
        if previous is None:
            if champion is None:
                if not list_versions(model_name):
                    raise NotFoundError(f"model '{model_name}' is not registered: nothing to roll back")
                raise NoChampionError(f"model '{model_name}' has no champion: nothing to roll back")
            raise NotFoundError(
                f"model '{model_name}' has no 'previous' version to roll back to (champion is v{champion.version})"
            )
        client.set_registered_model_alias(model_name, CHAMPION, str(previous.version))
        if champion is not None and champion.version != previous.version:
            client.set_registered_model_alias(model_name, PREVIOUS, str(champion.version))
    return get_version(model_name, previous.version)


@_reaching
def download_model(model_name: str, alias_or_version: str | int, dst: Path | None = None) -> tuple[Path, VersionInfo]:
    """The local .onnx file of a version (by alias or number), for inference without torch.

    Default `dst`: a cache beside the embedded store (versions never change, so a copy is reused)."""
    ref = str(alias_or_version)
    if ref.isdigit():
        info = get_version(model_name, int(ref))
    else:
        info = get_alias(model_name, ref)
        if info is None:
            if ref == CHAMPION:
                raise NoChampionError(f"no champion for model '{model_name}': train one with `cellcast train ...`")
            raise NotFoundError(f"model '{model_name}' has no alias '{ref}'")
    if dst is None:
        # keyed by store too: "v3" of another tracking server is another model
        store = hashlib.sha256(_state["uri"].encode()).hexdigest()[:8]
        dst = _state["root"] / STORE_DIR / "models" / store / model_name / f"v{info.version}"
    dst = Path(dst)
    found = sorted(dst.rglob("*.onnx")) if dst.is_dir() else []
    if not found:
        uri = f"models:/{model_name}/{info.version}"
        if dst.exists():
            mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst), tracking_uri=_state["uri"])
        else:
            # download beside it and rename: a reader (the service polling the champion) never
            # sees a half-written copy
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}-", dir=dst.parent))
            try:
                mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp), tracking_uri=_state["uri"])
                try:
                    os.replace(tmp, dst)
                except OSError:  # another process finished first: use its copy
                    pass
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        found = sorted(dst.rglob("*.onnx"))
    if not found:
        raise NotFoundError(f"model '{model_name}' v{info.version} ({info.source}) holds no .onnx file")
    return found[0], info
