"""A training run's life after the loop: score candidates, export and gate them, track them in
MLflow, register the best and let the promotion policy decide. Plain functions; the Prefect flow
in flows/training.py only calls them in order."""
from __future__ import annotations

import json
import logging
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..config import Settings
from ..data.window import WindowSet
from ..errors import CellcastError, ExportError
from ..modeling import plots
from ..modeling.evaluate import (BaselineReport, evaluate_baselines, evaluate_forecasts, predict_windows,
                                 season_of, seasonal_naive, usable_seasons)
from ..modeling.train import TrainResult, predictor
from . import promotion, tracking

log = logging.getLogger(__name__)


@dataclass
class Baselines:
    val: BaselineReport
    test: BaselineReport
    anchor_season: int | None       # the season the residual models are anchored on

    def to_dict(self) -> dict:
        return {"val": asdict(self.val), "test": asdict(self.test), "anchor_season": self.anchor_season}


def baselines(ws: WindowSet, settings: Settings) -> Baselines:
    """Naive and seasonal naive at every natural season; the best on *validation* anchors the models
    (choosing on test would leak), if its season fits the lookback."""
    seasons = settings.evaluate.seasons if settings.evaluate.seasons != "auto" else ws.meta.seasons
    seasons = usable_seasons(ws, list(seasons), split="val")   # val precedes test: usable for both
    val = evaluate_baselines(ws, "val", seasons)
    test = evaluate_baselines(ws, "test", seasons)
    fitting = {k: v for k, v in val.scores.items() if season_of(k) <= ws.meta.lookback and v["coverage"] == 1.0}
    anchor = season_of(min(fitting, key=lambda k: fitting[k]["mase"])) if fitting else None
    return Baselines(val, test, anchor)


@dataclass
class CandidateReport:
    name: str
    cell: str
    hidden_size: int
    num_layers: int
    val: dict
    test: dict
    by_step: list[float]
    best_epoch: int
    epochs: int
    stopped: str
    seconds: float
    windows_per_s: float
    device: str
    parity: dict = field(default_factory=dict)
    parity_ok: bool = False
    onnx_path: str | None = None
    error: str | None = None
    run_id: str | None = None
    model_uri: str | None = None


def onnx_metadata(ws: WindowSet, settings: Settings) -> dict:
    m = ws.meta
    meta = {"dataset": m.name, "freq": m.freq, "variables": m.variables, "targets": m.targets,
            "lookback": m.lookback, "horizon": m.horizon, "data_md5": m.data_md5, "params_hash": settings.fingerprint()}
    # the phase of the series' grid (readings at :51 past, days from 09:00): the service refuses requests off it
    meta["grid_origin"] = str(ws.timestamps[0].astype("datetime64[s]")) if len(ws.timestamps) else None
    return meta


def assess(result: TrainResult, ws: WindowSet, settings: Settings, out_dir: Path) -> CandidateReport:
    """Score a trained candidate on validation and test, export it to ONNX and check parity on real test windows."""
    from ..engine.onnx_export import check_parity, export_onnx

    c = result.candidate
    run = predictor(result.model)
    val, _ = evaluate_forecasts(ws, "val", predict_windows(run, ws, "val"))
    test, by_step = evaluate_forecasts(ws, "test", predict_windows(run, ws, "test"))
    rep = CandidateReport(name=c.name, cell=c.cell, hidden_size=c.hidden_size, num_layers=c.num_layers, val=val,
                          test=test, by_step=by_step, best_epoch=result.best_epoch, epochs=len(result.history),
                          stopped=result.stopped, seconds=result.seconds, windows_per_s=result.windows_per_s,
                          device=result.device)
    path = Path(out_dir) / f"{c.name}.onnx"
    try:
        export_onnx(result.model, path, onnx_metadata(ws, settings) | {"candidate": c.name},
                    example=ws.batch(ws.starts["test"][:2])[0])
        x, _ = ws.batch(ws.starts["test"])
        parity = check_parity(result.model, path, x, rtol=settings.registry.parity_atol)
        rep.parity = {"ok": parity.ok, "max_abs": parity.max_abs, "max_rel_to_scale": parity.max_rel_to_scale,
                      "windows": parity.n, "tolerance": parity.rtol, "reason": parity.reason}
        rep.parity_ok, rep.onnx_path = parity.ok, str(path)
    except ExportError as e:
        rep.error, rep.parity = str(e), {"ok": False, "reason": str(e)}
    return rep


def lineage(ws: WindowSet, settings: Settings) -> dict:
    return {"data_md5": ws.meta.data_md5 or "unknown", "params_hash": settings.fingerprint(),
            "git_commit": git_commit(), "cellcast_version": __version__, "dataset": ws.meta.name}


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@dataclass
class ChampionScore:
    version: int
    test: dict | None
    comparable: bool
    reason: str = ""


def score_champion(model_name: str, ws: WindowSet) -> ChampionScore | None:
    """The current champion re-evaluated on *these* test windows (it may have been trained on older data)."""
    from ..engine.inference import OnnxForecaster

    info = tracking.get_alias(model_name, "champion")
    if info is None:
        return None
    try:
        path, info = tracking.download_model(model_name, "champion")
        eng = OnnxForecaster.from_path(path, device="cpu")
    except CellcastError as e:
        return ChampionScore(info.version, None, False, f"champion v{info.version} could not be loaded: {e}")
    if eng.variables != ws.meta.variables or eng.horizon != ws.meta.horizon or eng.lookback > ws.meta.lookback:
        return ChampionScore(info.version, None, False,
                             f"champion v{info.version} is not comparable (variables {eng.variables}, horizon "
                             f"{eng.horizon}, lookback {eng.lookback} vs {ws.meta.variables}, {ws.meta.horizon}, "
                             f"{ws.meta.lookback})")
    pred = predict_windows(eng.predict, ws, "test")
    test, _ = evaluate_forecasts(ws, "test", pred)
    return ChampionScore(info.version, test, True)


@dataclass
class Outcome:
    dataset: str
    model_name: str
    parent_run_id: str
    best: str | None
    version: int | None
    decision: dict
    candidates: list[dict]
    baselines: dict
    champion_before: dict | None
    champion_after: int | None
    tracking_uri: str


def track_and_promote(ws: WindowSet, settings: Settings, base: Baselines, results: list[TrainResult],
                      reports: list[CandidateReport], validation_report: Path | None = None,
                      flow_run_id: str | None = None) -> Outcome:
    """One parent run per training run, a nested run per candidate; the best parity-checked candidate by
    validation MASE becomes a new version (alias challenger); the policy decides on champion."""
    uri = tracking.configure()
    model_name = settings.model_name
    tags = lineage(ws, settings) | {"flow_run_id": flow_run_id or "none", "anchor_season": str(base.anchor_season)}
    with tracking.parent_run(ws.meta.name, run_name=f"train-{ws.meta.name}", tags=tags) as parent_id:
        tracking.log_params({"dataset": ws.meta.name, "lookback": ws.meta.lookback, "horizon": ws.meta.horizon,
                             "freq": ws.meta.freq, "variables": ",".join(ws.meta.variables),
                             "candidates": ",".join(r.name for r in reports), "anchor_season": base.anchor_season,
                             "rows": ws.meta.rows, **{f"windows_{k}": v for k, v in ws.meta.counts.items()}})
        for split, rep in (("val", base.val), ("test", base.test)):
            for bname, sc in rep.scores.items():
                tracking.log_metrics({f"{split}_{bname}_{k}": v for k, v in sc.items()})
        tracking.log_dict(base.to_dict(), "baselines.json")
        if validation_report and Path(validation_report).is_file():
            tracking.log_artifact(validation_report, "validation")
        _log_pictures(ws, base, results, reports)
        for res, rep in zip(results, reports):
            _log_candidate(ws, settings, res, rep, tags)
        ok = [r for r in reports if r.parity_ok and r.error is None]
        champ_before = score_champion(model_name, ws)
        if not ok:
            decision = promotion.Decision(False, "no candidate passed its ONNX parity gate: nothing registered", {})
            tracking.set_tags({"promotion.decision": "rejected", "promotion.reason": decision.reason})
            return Outcome(ws.meta.name, model_name, parent_id, None, None, asdict(decision),
                           [asdict(r) for r in reports], base.to_dict(), _champ_dict(champ_before),
                           champ_before.version if champ_before else None, uri)
        best = min(ok, key=lambda r: r.val["mase"])
        same = _same_as_champion(model_name, best, tags)
        if same is not None:
            # a rerun on unchanged data, params and code: the champion already is this model
            decision = promotion.Decision(False, f"{best.name} is the model champion v{same} already is (same data, "
                                                 f"params, code and candidate): nothing registered", {})
            tracking.set_tags({"promotion.decision": "unchanged", "promotion.reason": decision.reason})
            return Outcome(ws.meta.name, model_name, parent_id, best.name, None, asdict(decision),
                           [asdict(r) for r in reports], base.to_dict(), _champ_dict(champ_before), same, uri)
        decision = promotion.decide(
            best.test["mase"], base.test.best_mase, base.test.best, settings.evaluate.promotion_margin,
            champion=champ_before.test["mase"] if champ_before and champ_before.comparable else None,
            parity_ok=best.parity_ok, candidate_name=best.name,
            champion_version=champ_before.version if champ_before and champ_before.comparable else None)
        if champ_before and not champ_before.comparable:
            decision.reason += f" ({champ_before.reason})"
        version = tracking.register_version(model_name, best.model_uri, best.run_id,
                                            tags=tags | {"candidate": best.name, "cell": best.cell,
                                                         "test_mase": f"{best.test['mase']:.6g}",
                                                         "parity_max_rel": f"{best.parity.get('max_rel_to_scale', 'nan')}"})
        tracking.apply_decision(model_name, version, decision)
        tracking.set_tags({"promotion.decision": "promoted" if decision.promote else "rejected",
                           "promotion.reason": decision.reason, "registered_version": str(version),
                           "best_candidate": best.name})
        champ = tracking.get_alias(model_name, "champion")
        return Outcome(ws.meta.name, model_name, parent_id, best.name, version, asdict(decision),
                       [asdict(r) for r in reports], base.to_dict(), _champ_dict(champ_before),
                       champ.version if champ else None, uri)


def _same_as_champion(model_name: str, best: CandidateReport, tags: dict) -> int | None:
    """The champion's version when it was trained from the same data, params and committed code as `best`."""
    champ = tracking.get_alias(model_name, "champion")
    commit = tags.get("git_commit", "unknown")
    if champ is None or commit == "unknown" or commit.endswith("-dirty"):
        return None
    keys = ("data_md5", "params_hash", "git_commit")
    if all(champ.tags.get(k) == tags.get(k) for k in keys) and champ.tags.get("candidate") == best.name:
        return champ.version
    return None


def _champ_dict(c: ChampionScore | None) -> dict | None:
    return asdict(c) if c else None


def _log_candidate(ws: WindowSet, settings: Settings, res: TrainResult, rep: CandidateReport, tags: dict) -> None:
    c = res.candidate
    params = {"cell": c.cell, "hidden_size": c.hidden_size, "num_layers": c.num_layers,
              **{k: v for k, v in settings.train.model_dump().items() if k not in ("cells", "hidden_size", "num_layers")},
              "anchor_season": res.model.spec.anchor_season, "rnn_steps_used": res.model.spec.steps}
    with tracking.candidate_run(rep.name, params=params, tags=tags | {"cell": c.cell}) as run_id:
        rep.run_id = run_id
        for row in res.history:
            tracking.log_metrics({"train_loss": row["train_loss"], "val_loss": row["val_loss"], "lr": row["lr"]},
                                 step=row["epoch"])
        tracking.log_metrics({"initial_val_loss": res.initial_val_loss, "best_val_loss": res.best_val_loss,
                              "best_epoch": res.best_epoch, "train_seconds": res.seconds,
                              "train_windows_per_s": res.windows_per_s,
                              **{f"val_{k}": v for k, v in rep.val.items()},
                              **{f"test_{k}": v for k, v in rep.test.items()},
                              **{f"test_mase_h{i + 1}": v for i, v in enumerate(rep.by_step)}})
        tracking.set_tags({"stopped": rep.stopped, "device": rep.device, "parity.ok": str(rep.parity_ok),
                           "parity.reason": rep.parity.get("reason", "")})
        tracking.log_dict(asdict(rep), "candidate.json")
        example = ws.batch(ws.starts["test"][:2])[0]
        tracking.log_torch_model(res.model, example)
        if rep.onnx_path and rep.parity_ok:
            rep.model_uri = tracking.log_onnx_model(Path(rep.onnx_path), example,
                                                    metadata=onnx_metadata(ws, settings) | {"candidate": rep.name})


def _log_pictures(ws: WindowSet, base: Baselines, results: list[TrainResult], reports: list[CandidateReport]) -> None:
    m = ws.meta
    ti, H = 0, m.horizon
    starts = ws.starts["test"][-10 * H:]            # the last ten horizons of the test range: readable, not a smear
    first = starts[0] + m.lookback                   # row of the first forecast step drawn
    actual = ws.values[first:, m.target_idx[ti]]
    x, _ = ws.batch(starts)
    fc = {base.test.best: seasonal_naive(ws, starts, season_of(base.test.best))[:, :, ti]}
    for res in results:
        fc[res.candidate.name] = predictor(res.model)(np.ascontiguousarray(x))[:, :, ti]
    fig = plots.forecast_vs_actual(ws.timestamps[first:], actual, fc,
                                   f"{m.name}: last {len(starts) // H or 1} forecasts of the test range", m.targets[ti])
    tracking.log_figure(fig, "forecast_vs_actual.png"); plots.close(fig)
    fig = plots.loss_curves({r.candidate.name: r.history for r in results}, f"{m.name}: loss")
    tracking.log_figure(fig, "loss_curves.png"); plots.close(fig)
    steps = {base.test.best: base.test.by_step[base.test.best], **{r.name: r.by_step for r in reports}}
    fig = plots.error_by_horizon(steps, f"{m.name}: test MASE by horizon step")
    tracking.log_figure(fig, "error_by_horizon.png"); plots.close(fig)


def summary_table(outcome: Outcome) -> str:
    """The table `cellcast run` prints: candidates, metrics, baselines and the promotion decision."""
    rows = [("model", "val MASE", "test MASE", "test sMAPE", "test MAE", "epochs", "s", "parity")]
    for c in outcome.candidates:
        rows.append((c["name"], f"{c['val']['mase']:.3f}", f"{c['test']['mase']:.3f}", f"{c['test']['smape']:.2f}",
                     f"{c['test']['mae']:.4g}", str(c["epochs"]), f"{c['seconds']:.0f}",
                     "ok" if c["parity_ok"] else "FAIL"))
    for bname, sc in outcome.baselines["test"]["scores"].items():
        val = outcome.baselines["val"]["scores"].get(bname, {}).get("mase", float("nan"))
        cov = "" if sc["coverage"] == 1.0 else f" ({sc['coverage']:.0%} of windows)"
        rows.append((bname + cov, f"{val:.3f}", f"{sc['mase']:.3f}", f"{sc['smape']:.2f}", f"{sc['mae']:.4g}",
                     "-", "-", "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    d = outcome.decision
    verdict = "PROMOTED to champion" if d.get("promote") else "not promoted"
    registered = f"{outcome.model_name} v{outcome.version}" if outcome.version else "nothing"
    lines += ["", f"best candidate: {outcome.best or '-'}  registered: {registered}",
              f"decision: {verdict}: {d.get('reason')}",
              f"champion now: {('v' + str(outcome.champion_after)) if outcome.champion_after else 'none'}"]
    return "\n".join(lines)


def write_summary(outcome: Outcome, settings: Settings) -> Path:
    path = Path(settings.paths.reports) / outcome.dataset / "train_summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(outcome), indent=2, default=str))
    return path
