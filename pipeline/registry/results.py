"""What a training run found, as one typed table: a row per candidate, baseline and classical reference, with the
scores every reader shows. The CLI's text (summary.summary_table), the Prefect artifact (flows/training.py) and
the run's train_summary.json all read these rows; none builds its own from the outcome's dicts."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Kind = Literal["candidate", "baseline", "reference"]


@dataclass(frozen=True)
class ResultRow:
    model: str  # the candidate's name, the baseline's (with the share of windows it covers), the reference's
    kind: Kind
    val_mase: float | None
    test_mase: float | None
    test_smape: float | None
    test_mae: float | None
    coverage_80: float | None = None  # shares in 0..1
    coverage_90: float | None = None
    crps: float | None = None
    epochs: int | None = None
    seconds: float | None = None
    parity_ok: bool | None = None
    status: str | None = None  # a reference without scores: why (failed, over budget)

    def to_dict(self) -> dict:
        return asdict(self)


def _get(d: dict, key: str) -> float | None:
    v = d.get(key)
    return None if v is None else float(v)


def result_rows(candidates: list[dict], baselines: dict, references: dict | None) -> list[ResultRow]:
    """The rows of a run: its candidates (CandidateReport dicts), then its baselines (test scores, the validation
    MASE beside them), then the classical references (scored on the origins a horizon apart)."""
    rows = [
        ResultRow(
            model=c["name"],
            kind="candidate",
            val_mase=_get(c["val"], "mase"),
            test_mase=_get(c["test"], "mase"),
            test_smape=_get(c["test"], "smape"),
            test_mae=_get(c["test"], "mae"),
            coverage_80=_get(c["test"], "coverage_80"),
            coverage_90=_get(c["test"], "coverage_90"),
            crps=_get(c["test"], "crps"),
            epochs=c.get("epochs"),
            seconds=c.get("seconds"),
            parity_ok=bool(c.get("parity_ok")),
        )
        for c in candidates
    ]
    for name, sc in baselines["test"]["scores"].items():
        covered = "" if sc["coverage"] == 1.0 else f" ({sc['coverage']:.0%} of windows)"
        rows.append(
            ResultRow(
                model=name + covered,
                kind="baseline",
                val_mase=_get(baselines["val"]["scores"].get(name, {}), "mase"),
                test_mase=_get(sc, "mase"),
                test_smape=_get(sc, "smape"),
                test_mae=_get(sc, "mae"),
            )
        )
    for name, row in (references or {}).items():
        rows.append(
            ResultRow(
                model=name,
                kind="reference",
                val_mase=None,
                test_mase=_get(row, "mase"),
                test_smape=_get(row, "smape"),
                test_mae=_get(row, "mae"),
                seconds=row.get("seconds"),
                status=None if "mase" in row else row.get("status"),
            )
        )
    return rows


def text_table(rows: list[ResultRow]) -> list[str]:
    """Aligned text lines (the CLI): candidates and baselines; the references have their own block."""

    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}%"

    header = ("model", "val MASE", "test MASE", "test sMAPE", "test MAE", "cov 80%", "cov 90%", "CRPS", "epochs", "s")
    cells = [(*header, "parity")]
    for r in rows:
        if r.kind == "reference":
            continue
        cells.append(
            (
                r.model,
                num(r.val_mase, ".3f"),
                num(r.test_mase, ".3f"),
                num(r.test_smape, ".2f"),
                num(r.test_mae, ".4g"),
                pct(r.coverage_80),
                pct(r.coverage_90),
                num(r.crps, ".3f"),
                "-" if r.epochs is None else str(r.epochs),
                num(r.seconds, ".0f"),
                "-" if r.parity_ok is None else ("ok" if r.parity_ok else "FAIL"),
            )
        )
    widths = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)) for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def artifact_rows(rows: list[ResultRow]) -> list[dict]:
    """The rows of the Prefect table artifact: every row, its kind in the model column, numbers rounded."""

    def r(v: float | None, digits: int) -> float | None:
        return None if v is None else round(v, digits)

    prefix = {"candidate": "", "baseline": "baseline: ", "reference": "reference: "}
    return [
        {
            "model": prefix[x.kind] + x.model,
            "val MASE": r(x.val_mase, 4),
            "test MASE": r(x.test_mase, 4) if x.status is None else x.status,
            "test sMAPE": r(x.test_smape, 3),
            "test MAE": None if x.test_mae is None else float(f"{x.test_mae:.4g}"),
            "cov 80%": r(x.coverage_80, 3),
            "cov 90%": r(x.coverage_90, 3),
            "epochs": x.epochs,
            "parity": None if x.parity_ok is None else ("ok" if x.parity_ok else "FAIL"),
        }
        for x in rows
    ]
