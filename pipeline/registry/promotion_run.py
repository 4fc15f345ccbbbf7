"""A training run's life after the loop: one parent run and a run per candidate tracked, the best
selected and registered as a version, the promotion policy's decision applied to the aliases. The
Prefect flow in flows/training.py calls it after the candidates are assessed."""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..config import Settings
from ..data.windowset import WindowSet
from ..modeling.train import TrainResult
from . import promotion, tracking
from .assessment import Baselines, CandidateReport
from .champion import ChampionScore, champ_dict, same_as_champion, score_champion
from .decision import decide, select
from .lineage import data_command, data_tags, lineage
from .metadata import split_tags
from .pictures import log_pictures
from .results import ResultRow, result_rows
from .run_logs import log_candidate, log_inputs


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
    # how the best candidate was picked (evaluate.selection) and the classical reference rows (modeling/classical.py)
    selection: dict = field(default_factory=dict)
    references: dict = field(default_factory=dict)

    def rows(self) -> list[ResultRow]:
        """Candidates, baselines and references as one typed table (registry/results.py): what every reader shows."""
        return result_rows(self.candidates, self.baselines, self.references)


def track_and_promote(
    ws: WindowSet,
    settings: Settings,
    base: Baselines,
    results: list[TrainResult],
    reports: list[CandidateReport],
    validation_report: Path | None = None,
    flow_run_id: str | None = None,
    selection: dict | None = None,
    references: dict | None = None,
    data_version=None,
) -> Outcome:
    """One parent run per training run, a nested run per candidate; the best parity-checked candidate by
    validation MASE (or, given `selection`'s backtest means, by those) becomes a new version (alias challenger); the
    policy decides on champion. `references`: reference_rows(), logged beside the baselines. `data_version`: what
    versioning.keep() did with the validated data (tagged on the version with the command that restores it)."""
    settings.check_dataset(ws.meta.name)
    uri = tracking.configure()
    references = references or {}
    sel = {"method": "backtest", **selection} if selection else {"method": "split"}
    model_name = settings.model_name
    tags = lineage(ws, settings) | {"flow_run_id": flow_run_id or "none", "anchor_season": str(base.anchor_season)}
    if data_version is not None:
        tags |= data_tags(data_version)
    tracking.end_undecided(model_name)  # a version a killed run registered and never decided: marked, not reused
    with tracking.parent_run(ws.meta.name, run_name=f"train-{ws.meta.name}", tags=tags) as parent_id:
        log_inputs(ws, base, reports, references, selection, sel["method"], validation_report)
        log_pictures(ws, base, results, reports)
        for res, report in zip(results, reports):
            log_candidate(ws, settings, res, report, tags)
        ok = [r for r in reports if r.parity_ok and r.error is None]
        starts = ws.starts["test"]  # every origin: the test weighs overlapping windows with a HAC variance
        champ_before = score_champion(model_name, ws, starts)
        outcome = functools.partial(
            Outcome,
            dataset=ws.meta.name,
            model_name=model_name,
            parent_run_id=parent_id,
            candidates=[asdict(r) for r in reports],
            baselines=base.to_dict(),
            champion_before=champ_dict(champ_before),
            tracking_uri=uri,
            selection=sel,
            references=references,
        )
        if not ok:
            decision = promotion.Decision(False, "no candidate passed its ONNX parity gate: nothing registered", {})
            tracking.set_tags({"promotion.decision": "rejected", "promotion.reason": decision.reason})
            before = champ_before.version if champ_before else None
            return outcome(best=None, version=None, decision=asdict(decision), champion_after=before)
        best, how = select(ok, selection)
        sel["why"] = how
        same = same_as_champion(model_name, best, tags)
        if same is not None:
            # a rerun on unchanged data, params and code: the champion already is this model
            decision = promotion.Decision(
                False,
                f"{best.name} is the model champion v{same} already is (same data, "
                f"params, code and candidate): nothing registered ({how})",
                {},
            )
            tracking.set_tags({"promotion.decision": "unchanged", "promotion.reason": decision.reason})
            return outcome(best=best.name, version=None, decision=asdict(decision), champion_after=same)
        decision = decide(ws, settings, best, how, starts, champ_before, references)
        version = _register(ws, model_name, best, tags, data_version)
        decision = _record_decision(model_name, version, best, decision, champ_before)
        champ = tracking.get_alias(model_name, "champion")
        return outcome(
            best=best.name, version=version, decision=asdict(decision), champion_after=champ.version if champ else None
        )


def _register(ws: WindowSet, model_name: str, best: CandidateReport, tags: dict, data_version) -> int:
    """`best` as a new version of `model_name`, tagged with its lineage, test scores and parity (and, when its data
    is versioned, the command that restores that data)."""
    version = tracking.register_version(
        model_name,
        best.model_uri,
        best.run_id,
        tags=tags
        | split_tags(ws)
        | {
            "candidate": best.name,
            "cell": best.cell,
            "test_mase": f"{best.test['mase']:.6g}",
            **{f"test_coverage_{k}": f"{v[0]:.4g}" for k, v in best.coverage().items()},
            "parity_max_rel": f"{best.parity.get('max_rel_to_scale', 'nan')}",
        },
    )
    if data_version is not None:
        tracking.set_version_tags(model_name, version, {"data_get": data_command(ws.meta.name, version)})
    return version


def _record_decision(
    model_name: str,
    version: int,
    best: CandidateReport,
    decision: promotion.Decision,
    champ_before: ChampionScore | None,
) -> promotion.Decision:
    """The decision applied to the registry (aliases and version tags) and tagged on the parent run; not promoted
    after all when the champion moved while this run decided."""
    applied = tracking.apply_decision(
        model_name, version, decision, expected_champion=champ_before.version if champ_before else None
    )
    if decision.promote and applied.tags.get("promotion.decision") != "promoted":
        # the champion moved while this run decided (another machine's training, a rollback): not promoted
        decision = promotion.Decision(False, applied.tags["promotion.reason"], decision.metrics)
    tracking.set_tags(
        {
            "promotion.decision": "promoted" if decision.promote else "rejected",
            "promotion.reason": decision.reason,
            "registered_version": str(version),
            "best_candidate": best.name,
        }
    )
    return decision
