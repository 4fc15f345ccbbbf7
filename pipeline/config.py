"""Typed configuration, read once from params.yaml and passed down.

`load_params()` reads the file; `Params.for_dataset(name)` applies that dataset's overrides
(`datasets.<name>` in params.yaml) and returns the settings every stage uses for it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError

PARAMS_FILE = "params.yaml"
CELLS: tuple[Literal["rnn", "lstm", "gru"], ...] = ("rnn", "lstm", "gru")
Positive = Annotated[int, Field(ge=1)]


# A dataset's name becomes a folder under data/, DVC stage keys (ingest@NAME) and a params key (datasets.NAME, so
# no '.'), a registered model (NAME-forecaster) and Prefect deployments (train-NAME): one rule for all of them.
DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
DATASET_NAME_RULE = "letters, digits, '_' and '-' only, starting with a letter or digit, at most 64 characters"


def dataset_name_error(name: object) -> str | None:
    """Why `name` cannot name a dataset (one line), or None when it can."""
    if isinstance(name, str) and DATASET_NAME.fullmatch(name):
        return None
    shown = repr(name) if not isinstance(name, str) else repr(name if len(name) <= 40 else name[:40] + "...")
    size = f" ({len(name)} characters)" if isinstance(name, str) and len(name) > 64 else ""
    return f"dataset name {shown}{size}: {DATASET_NAME_RULE}"


def check_dataset_name(name: object, option: str | None = None) -> str:
    """`name` when it can name a dataset, else ConfigError naming the option (e.g. --name) and the rule."""
    why = dataset_name_error(name)
    if why:
        raise ConfigError(f"{option}: {why}" if option else why)
    return name  # type: ignore[return-value]


def _no_repeats(values: list, what: str = "") -> list:
    """A list setting that names each item once (the first repeated one is named)."""
    dup = sorted({v for v in values if values.count(v) > 1})
    if dup:
        raise ValueError(f"{what}'{dup[0]}' is listed more than once")
    return values


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Paths(_Strict):
    data: Path = Path("data")
    reports: Path = Path("reports")
    quarantine: Path = Path("quarantine")
    forecasts: Path = Path("forecasts")
    checkpoints: Path = Path(".cellcast/checkpoints")

    def under(self, root: Path) -> Paths:
        """The same layout rooted at `root` (relative paths only)."""
        return Paths(**{k: (v if Path(v).is_absolute() else Path(root) / v) for k, v in self.model_dump().items()})


class ScheduleSpec(_Strict):
    """Declared opening hours (data/schedule.py): the weekdays open (a list, or 'Mon-Fri'; none: every day), the
    first and the last open step of each of them (HH:MM; none: whole days, as trading days of a daily series)."""

    days: list[str] | str | None = None
    open: str | None = None
    close: str | None = None


class IngestConfig(_Strict):
    # the steps a series is observed at (data/schedule.py): auto (detected at ingest), none (24/7: every step of the
    # grid), {days, open, close}, or the same in words: "Mon-Fri 08:00-16:30"; `cellcast ingest --schedule` for a file
    schedule: Literal["auto", "none"] | ScheduleSpec | str = "auto"
    dedupe: Literal["reject", "first", "last", "mean"] = "reject"
    max_fill_steps: int = Field(4, ge=0)
    long_gaps: Literal["reject", "segment"] = "reject"
    min_windows: int = Field(1, ge=1)
    # forecasts in the test split whose horizons do not overlap (origins a horizon apart): fewer is no test.
    # the data rule: the test split holds at least this many whole horizons (forecast origins a horizon apart);
    # promotion's statistical test has its own evaluate.min_decision_paths. A panel's series pool their paths: each is
    # asked at most its share of min_decision_paths (data/splits.series_test_need)
    min_test_horizons: int = Field(5, ge=1)
    # panels (ingest --id-col): a series that breaks a rule fails the dataset (reject) or is removed into
    # quarantine with its report and named in the summary (drop)
    bad_series: Literal["reject", "drop"] = "reject"
    # panels: whole series per Parquet row group, up to this many rows (a longer series gets a group of its
    # own): the unit read back one at a time and the unit validation fans out over
    partition_rows: int = Field(250_000, ge=1)
    # columns whose values are known ahead (a planned promotion, a weather forecast, a working-day flag): the
    # model reads them for the horizon too, so a forecast needs them there. `cellcast ingest --future-features`
    # sets them for a file; this key for a bundled dataset (or as the default for a file)
    future_features: list[str] = Field(default_factory=list)
    # panels: numeric columns constant within each series (a capacity, a floor area), kept once per series and read
    # by the global model beside the calendar (`cellcast ingest --static`); features constant within every series
    # are found as well
    static: list[str] = Field(default_factory=list)

    @field_validator("future_features", "static")
    @classmethod
    def _unique_columns(cls, v):
        return _no_repeats(v)


class ValidateConfig(_Strict):
    bounds: dict[str, tuple[float, float]] = Field(default_factory=dict)
    profile_tolerance: float = Field(1.0, ge=0)


class WindowConfig(_Strict):
    lookback: int | Literal["auto"] = "auto"
    horizon: int | Literal["auto"] = "auto"
    stride: int = Field(1, ge=1)
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)
    # the test split grows up to this share of the rows until it holds evaluate.min_decision_paths whole horizons: on
    # a short series 15% of the rows are too few forecasts for promotion to decide on, and no decision is no champion
    # (a panel's series grow alike until together they hold them: data/splits.test_horizons)
    test_fraction_max: float = Field(0.3, gt=0, lt=0.5)
    # a panel's training windows: uniform over windows (a long series weighs more) or per_series (each series alike)
    panel_weighting: Literal["uniform", "per_series"] = "uniform"
    # how many of its longest natural season an auto lookback holds; auto: 1 for one series, 2 for a panel (its pooled
    # rows support the longer windows, and the seasonal-median anchor compares the last two seasons: modeling/anchor.py)
    lookback_seasons: Positive | Literal["auto"] = "auto"
    # a single series whose auto lookback is cut to a tenth of its rows gets this many of its shortest natural season
    # where a fifth of its rows holds them (1: no more); auto then weighs its anchors on that lookback and on the one
    # before and keeps the better on validation (modeling/anchor.py; BENCHMARKS.md "Three seasons for the anchor")
    min_lookback_seasons: Positive = 3

    @model_validator(mode="after")
    def _test_share(self):
        if self.test_fraction_max < self.test_fraction:
            raise ValueError(
                f"test_fraction_max {self.test_fraction_max:g} is below test_fraction {self.test_fraction:g}"
            )
        return self

    @field_validator("lookback", "horizon")
    @classmethod
    def _positive(cls, v):
        if v != "auto" and v < 1:
            raise ValueError("must be a positive number of steps or 'auto'")
        return v


CALENDAR_PARTS = ("tod", "dow", "doy", "holiday")


class CalendarConfig(_Strict):
    """Calendar features of the timestamps, known for any future step (pipeline/data/calendar.py)."""

    # which parts: a list (empty: none), or auto: chosen from the frequency and the span of the training rows when
    # the windows are built (data/calendar.py `resolve_parts`)
    parts: list[Literal["tod", "dow", "doy", "holiday"]] | Literal["auto"] = "auto"
    country: str | None = None  # public holidays of this country (ISO code of the `holidays` package)
    subdiv: str | None = None  # ... and of this subdivision (state, province), e.g. VIC, IL
    timezone: str | None = None  # the zone the calendar is read in (stored timestamps are UTC when the
    # input had one); None: the timestamps as they are

    @model_validator(mode="after")
    def _consistent(self):
        if self.parts != "auto":
            _no_repeats(self.parts, "parts: ")
        if self.parts != "auto" and "holiday" in self.parts and not self.country:
            raise ValueError("parts: 'holiday' needs a country (calendar.country, e.g. US, AU, DE)")
        if self.subdiv and not self.country:
            raise ValueError(f"subdiv '{self.subdiv}' needs a country (calendar.country)")
        return self


ANCHORS = ("seasonal_naive", "linear", "auto")
REFERENCES: tuple[Literal["mstl", "ets", "theta"], ...] = ("mstl", "ets", "theta")  # evaluate.references' default


class TrainConfig(_Strict):
    cells: Annotated[list[Literal["rnn", "lstm", "gru"]], Field(min_length=1)] = list(CELLS)
    hidden_size: int | list[int] = 64
    num_layers: int | list[int] = 1
    dropout: float = Field(0.0, ge=0, lt=1)
    rnn_steps: int = Field(48, ge=1)
    residual: bool = True
    # what the residual is learned over: the best seasonal naive on validation, a linear map from
    # the lookback and the known-future block fitted in closed form (ridge) and frozen, their mean (combined), or
    # auto: whichever forecasts validation better (docs/forecasting.md); seasonal_median: the median of several
    # seasonal naives (modeling/anchor.py), also weighed by auto where the lookback holds two seasons; theta: the
    # lookback deseasonalized, smoothed (SES) plus half its trend, reseasonalized, a fixed linear map (auto weighs it
    # and its mean with the linear anchor on a single seasonal series)
    anchor: Literal["seasonal_naive", "seasonal_median", "linear", "combined", "theta", "auto"] = "auto"
    anchor_ridge: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=1)] = Field(
        default_factory=lambda: [0.1, 1.0, 10.0, 100.0, 1000.0]
    )  # penalties tried, chosen on validation
    anchor_max_windows: int = Field(20000, ge=1)  # training windows the ridge is fitted on (sampled beyond)
    # the theta anchor's smoothing constants tried, chosen on validation (0.1: a level of about the last ten steps)
    anchor_theta_alphas: Annotated[list[Annotated[float, Field(gt=0, le=1)]], Field(min_length=1)] = Field(
        default_factory=lambda: [0.1, 0.2, 0.3, 0.5, 0.8]
    )
    # shares of the learnt point residual tried after training, the one forecasting validation best kept (0: the
    # anchor alone); [1.0]: the residual as trained
    residual_gates: Annotated[list[Annotated[float, Field(ge=0, le=1)]], Field(min_length=1)] = Field(
        default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0]
    )
    # a second cell of the same kind runs over the horizon reading [future_h, anchor_h]; auto: when the windows carry
    # a known-future block and the horizon has more than one step (modeling/train.py `use_decoder`)
    decoder: bool | Literal["auto"] = "auto"
    # also offer the anchor alone (untrained, its residual at zero) as a candidate, chosen on validation like any other
    anchor_candidate: bool = True
    ensemble: bool = True  # also offer the mean of the trained cells as one more candidate (one graph; with two
    # or more candidates), chosen on validation like any other
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(256, ge=1)
    max_batch_size: int = Field(16384, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    clip_grad_norm: float = Field(1.0, gt=0)
    patience: int = Field(4, ge=1)
    lr_factor: float = Field(0.5, gt=0, lt=1)
    lr_patience: int = Field(2, ge=0)
    max_train_windows: int = Field(8000, ge=1)
    min_epoch_batches: int = Field(8, ge=1)  # an epoch draws at least this many batches (up to max_train_windows)
    max_val_windows: int | None = Field(None, ge=1)  # the epoch's validation loss on at most this many windows, evenly
    # spread (a large panel holds millions); None: all of them
    time_budget_s: float = Field(300, gt=0)
    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # candidates trained at once; auto: as many as there are cores, at most one per candidate, each with its share of
    # the cores (1 by default: worker processes won 13% on two free cores and lost up to a fifth on a busy shared
    # machine, BENCHMARKS.md). task_runner: processes (a single series' candidates on the CPU each in a worker
    # process of its own; a panel's, or on a GPU, one after another in this process), threads (this process: the
    # candidates share the interpreter, and on 2 busy cores each epoch ran 1.3-2x slower beside another) or dask
    parallel: Positive | Literal["auto"] = 1
    threads: Positive | Literal["auto"] = "auto"
    task_runner: Literal["processes", "threads", "dask"] = "processes"
    dask_address: str | None = None
    # a panel: one global model per candidate (registered), or also one model per series (local), trained and scored
    # for comparison only (a comparison run in MLflow, never registered); local fans out like task_runner says
    strategy: Literal["global", "local"] = "global"

    @field_validator("hidden_size", "num_layers")
    @classmethod
    def _sizes(cls, v):
        # one size or a grid of them: each must build a layer, and a grid must name at least one
        sizes = v if isinstance(v, list) else [v]
        if not sizes:
            raise ValueError("an empty list trains nothing: give at least one size")
        if min(sizes) < 1:
            raise ValueError(f"{min(sizes)} is not a positive size")
        return v

    @model_validator(mode="after")
    def _dask_needs_parallel(self):
        if self.dask_address and self.task_runner != "dask":
            raise ValueError("dask_address is set but task_runner is not 'dask'")
        if self.anchor in ("linear", "combined", "theta") and not self.residual:
            raise ValueError(f"anchor '{self.anchor}' needs residual: true (the anchor is what the residual is over)")
        return self

    def parallel_count(self) -> int:
        """train.parallel as a number: auto = the cores, at most one per candidate (the ensemble trains nothing)."""
        if self.parallel != "auto":
            return int(self.parallel)
        return max(1, min(os.cpu_count() or 1, len(self.grid())))

    def grid(self) -> list[dict]:
        """Every candidate: each cell x each hidden size x each depth listed."""
        hs = self.hidden_size if isinstance(self.hidden_size, list) else [self.hidden_size]
        ls = self.num_layers if isinstance(self.num_layers, list) else [self.num_layers]
        return [{"cell": c, "hidden_size": h, "num_layers": n} for c in self.cells for h in hs for n in ls]


class EvaluateConfig(_Strict):
    seasons: list[Positive] | Literal["auto"] = "auto"
    promotion_margin: float = Field(0.02, ge=0, lt=1)
    # the evidence a decision needs: independent forecast paths (test windows a horizon apart) the test weighs
    min_decision_paths: int = Field(10, ge=2)
    # the one-sided Diebold-Mariano p-value a challenger needs against the champion (and the bar): a wrong
    # replacement costs a working forecast
    significance: float = Field(0.05, gt=0, lt=1)
    # the p-value a first champion needs against the bar: with no champion the user gets no forecast at all, while
    # a wrongly promoted first model forecasts about as well as seasonal naive (docs/forecasting.md)
    first_significance: float = Field(0.10, gt=0, lt=1)
    # quantile levels every candidate forecasts (pinball heads, conformalised on held-out windows); the median is
    # the point forecast; [] forecasts the point only. Intervals are the symmetric pairs (0.1, 0.9: 80%)
    quantiles: list[float] = Field(default_factory=lambda: [0.05, 0.1, 0.5, 0.9, 0.95])
    # a candidate whose test coverage of an interval falls short of its nominal level by more than this is not
    # promoted; covering more is reported as width (over-coverage is inefficiency, not danger)
    coverage_tolerance: float = Field(0.05, gt=0, lt=1)
    # a candidate's interval (Winkler) score must not be worse than the bar's own empirical intervals' (the strongest
    # seasonal naive plus the quantiles of its validation errors per step) ...
    interval_score_gate: bool = True
    # ... refused when worse by more than this share of the bar's score, or worse by evidence (one-sided
    # Diebold-Mariano on the per-window Winkler scores, p < evaluate.significance); less, and not significantly, is
    # noise between two bands of one quality (docs/forecasting.md)
    interval_score_tolerance: float = Field(0.1, ge=0, lt=1)
    # the held-out windows the quantiles are conformalised on: every validation window, or the N most recent
    calibration_windows: Positive | Literal["all"] = "all"
    # how the conformal shift applies: widen (an interval only ever grows: held-out months calmer than what follows
    # must not narrow it), guarded (two-sided, but narrowing only as far as every one of `calibration_parts`
    # consecutive parts of the held-out windows agrees), two_sided (classic CQR), none (the pinball heads as trained)
    calibration: Literal["widen", "guarded", "two_sided", "none"] = "widen"
    calibration_parts: int = Field(2, ge=2, le=10)  # guarded: the consecutive parts that must each support narrowing
    calibration_rank: Literal["paths", "windows"] = "paths"  # what the conformal rank counts (params.yaml)
    # the test split's bands: walk_forward (each origin recalibrated on every miss observed before it, held-out and
    # earlier test windows; the served model carries every miss's shift) | validation (the held-out windows' only)
    # | adaptive (walk_forward, each origin's ranks read at levels corrected by how the nominal bands covered the test
    # windows observed before it: nearer nominal coverage, but a worse interval score on the corpus: not the default)
    calibration_update: Literal["walk_forward", "adaptive", "validation"] = "walk_forward"
    # the misses' units: absolute (the data's), level (each window's forecast level: a band that grows with a positive
    # series), auto (level where it calibrates the later half of the held-out windows better from the earlier half),
    # bar (level where the seasonal-naive bar's misses before the test split grow with their level; a single series)
    calibration_scale: Literal["auto", "bar", "absolute", "level"] = "auto"
    # how the training flow picks its best candidate: the validation split's MASE (split), or the mean MASE over the
    # backtest's folds cut from the rows before the test split (backtest: params `backtest`; never the final test)
    selection: Literal["split", "backtest"] = "split"
    # classical reference rows beside the candidates (modeling/classical.py), scored on the promotion's test origins;
    # evidence only: promotion's bar stays the seasonal-naive family (docs/forecasting.md)
    references: list[Literal["mstl", "ets", "theta"]] = Field(default_factory=lambda: list(REFERENCES))
    reference_budget_s: float = Field(180, gt=0)  # wall seconds per reference, all its origins: past it, reported
    # rows of history each reference fit is given: auto = 8 cycles of the longest natural season (8 weeks of a
    # half-hourly series, 8 years of a daily one), else this many
    reference_history: Positive | Literal["auto"] = "auto"
    # a reference is fitted once on the history before the first test origin and rolled forward with its parameters
    # fixed (again after a break); a number: fitted again every this many origins (1: at every origin)
    reference_refit_every: Positive | None = None
    # a panel: the references run per series on this many of its series (a fixed sample; None: every series)
    panel_reference_sample: Positive | None = 200

    @field_validator("references")
    @classmethod
    def _unique_references(cls, v):
        return _no_repeats(v)

    @field_validator("quantiles")
    @classmethod
    def _levels(cls, v):
        if not v:
            return v
        if any(not 0 < q < 1 for q in v):
            raise ValueError(f"{next(q for q in v if not 0 < q < 1)} is not a level strictly between 0 and 1")
        if any(b <= a for a, b in zip(v, v[1:], strict=False)):
            raise ValueError("levels must be listed in increasing order, each once")
        if 0.5 not in v:
            raise ValueError("the median (0.5) must be among the levels: it is the point forecast")
        return v


class BacktestConfig(_Strict):
    """Rolling-origin evaluation (`cellcast backtest`, evaluate.selection: backtest; data/folds.py)."""

    folds: Positive = 4
    # retrain: every fold trains the candidates again on its own rows (same seeds and params); calibration: the
    # candidates are trained once, on the first fold's training rows, and every fold recomputes only the conformal
    # calibration on its validation rows (one training instead of K)
    refit: Literal["retrain", "calibration"] = "retrain"


class RegistryConfig(_Strict):
    model_suffix: str = "-forecaster"
    parity_atol: float = Field(1e-3, gt=0)
    # a tracking server that does not answer: retried with backoff for at most this long per call, then
    # one error (MLflow's own default is ~4.6 minutes of silence); 0 = no retries
    retry_seconds: float = Field(60, ge=0, le=3600)
    request_timeout_s: int = Field(30, ge=1, le=600)  # one HTTP request to the tracking server


class ServeConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    poll_seconds: float = Field(10, gt=0)
    max_body_bytes: int = Field(1 << 20, ge=1024)
    workers: int = Field(1, ge=1, le=64)
    graceful_shutdown_s: float = Field(30, gt=0)
    access_log: bool = False
    # several models in one service (`cellcast serve A B`, `--all`): load each at start (eager) or on its first
    # request (lazy: a fleet starts at once and holds only the models asked for)
    load: Literal["eager", "lazy"] = "eager"
    # the `challenger` alias of a served model, when it has one: shadow answers every request too (off the request's
    # path, never returned); canary answers this share of requests instead of the champion (a stable hash of the
    # request picks them). docs/operations.md "Shadow and canary"
    shadow: bool = False
    canary: float = Field(0.0, ge=0, le=1)
    shadow_queue: int = Field(1000, ge=1)  # shadow forecasts waiting for the worker; more are dropped (counted)
    # every answer's rows, as Parquet under forecasts/NAME/live/ (what the live monitor scores)
    live_log: bool = True
    live_log_flush_s: float = Field(5.0, gt=0)
    # each earlier UTC day's files are folded into one every hour; days older than this are removed (null: kept)
    live_log_keep_days: float | None = Field(90, gt=0)


class MonitorConfig(_Strict):
    """When the scheduled forecast flow asks for a retrain (pipeline/monitoring/verdict.py)."""

    mase_ratio: float | None = Field(1.5, gt=0)  # rolling MASE / champion's test MASE above this; None: never
    min_points: int | Literal["auto"] = "auto"  # scored forecast points before accuracy is judged
    window: int | Literal["auto"] = "auto"  # rolling window, in steps of the series
    psi: float | None = Field(0.25, gt=0)  # any input's PSI vs the training split above this; None: never
    # ... and above this multiple of the highest PSI the training split's own windows of as many rows show
    psi_margin: float = Field(1.5, ge=1)
    psi_bins: int = Field(10, ge=2, le=100)
    drift_rows: int | Literal["auto"] = "auto"  # the latest rows compared with the training split
    outside_share: float | None = Field(0.02, gt=0, le=1)  # share outside the trained bounds above this; None: never
    cooldown_hours: float = Field(24, ge=0)  # no second retrain trigger within this many hours
    # the challenger replaces the champion when its live errors beat the champion's (monitoring/promote.py) after
    # each monitoring of the forecast flow; `cellcast promote NAME --live` applies the same rule on demand
    live_promotion: bool = False
    live_min_forecasts: int = Field(30, ge=2)  # paired live forecast paths (same series and origin) at least
    # a panel: retrain when more than this share of its scored series is past a threshold (per-series verdicts)
    panel_share: float = Field(0.2, gt=0, le=1)

    @field_validator("min_points", "window", "drift_rows")
    @classmethod
    def _positive(cls, v):
        if v != "auto" and v < 1:
            raise ValueError("must be a positive number or 'auto'")
        return v


class VersioningConfig(_Strict):
    """The data every model trains on, kept by DVC (docs/dvc.md): in the local cache always (inside a DVC project),
    pushed to a remote per `push`."""

    push: Literal["auto", "always", "never"] = "auto"
    remote: str | None = None


_SECTIONS = ("ingest", "validate", "window", "calendar", "train", "evaluate", "backtest", "monitor", "serve")


class _Sections(_Strict):
    """The sections of params.yaml every stage reads."""

    paths: Paths = Paths()
    ingest: IngestConfig = IngestConfig()
    validate_: ValidateConfig = Field(ValidateConfig(), alias="validate")
    window: WindowConfig = WindowConfig()
    calendar: CalendarConfig = CalendarConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    backtest: BacktestConfig = BacktestConfig()
    registry: RegistryConfig = RegistryConfig()
    serve: ServeConfig = ServeConfig()
    monitor: MonitorConfig = MonitorConfig()
    versioning: VersioningConfig = VersioningConfig()

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _lookback_fits_a_request(self):
        # a forecast request carries `lookback` observations per variable, at least 2 bytes each ("0,"):
        # a longer lookback would train a model nobody can ask for a forecast
        lookback, limit = self.window.lookback, self.serve.max_body_bytes
        if lookback != "auto" and 2 * lookback > limit:
            raise ValueError(
                f"window.lookback: {lookback} steps cannot fit in a forecast request of "
                f"serve.max_body_bytes {limit} (at least 2 bytes per observation): lower the "
                f"lookback or raise serve.max_body_bytes"
            )
        return self


class Settings(_Sections):
    """The settings of one dataset: the base sections with its overrides applied."""

    dataset: str

    @field_validator("dataset")
    @classmethod
    def _dataset_name(cls, v: str) -> str:
        why = dataset_name_error(v)
        if why:
            raise ValueError(why)
        return v

    @property
    def model_name(self) -> str:
        return f"{self.dataset}{self.registry.model_suffix}"

    def check_dataset(self, name: str, what: str = "windows") -> None:
        """`what` (windows, a result) of dataset `name` meets these settings: they must be the same dataset's.
        The settings carry a dataset's identity; this is checked where data made elsewhere joins them."""
        if name != self.dataset:
            raise ConfigError(f"{what} of dataset '{name}' given with the settings of dataset '{self.dataset}'")

    def fingerprint(self) -> str:
        """A short hash of every setting that shapes a model: the `params_hash` lineage tag."""
        # how to reach the tracking server shapes no model
        body = self.model_dump(
            mode="json",
            by_alias=True,
            exclude={"paths": True, "serve": True, "registry": {"retry_seconds", "request_timeout_s"}},
        )
        body.pop("monitor", None)  # when to retrain shapes no model
        body.pop("versioning", None)  # nor where its data is kept
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


class Params(_Sections):
    """params.yaml as a whole: the sections, the default dataset and per-dataset overrides."""

    dataset: str = "elecdemand"
    datasets: dict[str, dict[str, dict]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_overrides(self):
        for name in (self.dataset, *self.datasets):
            why = dataset_name_error(name)
            if why:
                raise ValueError(f"{'dataset' if name == self.dataset else 'datasets'}: {why}")
        for name, over in self.datasets.items():
            for section in over:
                if section not in _SECTIONS:
                    raise ValueError(
                        f"datasets.{name}.{section}: not a section that can be overridden "
                        f"(one of {', '.join(_SECTIONS)})"
                    )
            self.for_dataset(name)  # type-check every override now, not at first use
        return self

    def for_dataset(self, name: str | None = None, overrides: dict | None = None) -> Settings:
        """The settings of dataset `name`: the sections, its `datasets:` entry, then `overrides` (sections
        of the same shape, e.g. {"train": {"epochs": 3}}: what a deployment or a run adds on top of
        params.yaml), each checked like params.yaml itself."""
        name = check_dataset_name(name) if name is not None else self.dataset
        base = self.model_dump(by_alias=True, exclude={"datasets", "dataset"})
        merged = copy.deepcopy(base)
        for section, values in (self.datasets.get(name) or {}).items():
            merged[section] = {**merged[section], **(values or {})}
        try:
            settings = Settings(dataset=name, **merged)
        except ValidationError as e:
            raise ConfigError(_one_line(e, prefix=f"datasets.{name}")) from None
        if not overrides:
            return settings
        if not isinstance(overrides, dict):
            raise ConfigError(f"overrides: must be a mapping of sections, got {type(overrides).__name__}")
        for section, values in overrides.items():
            if section not in _SECTIONS:
                raise ConfigError(
                    f"overrides.{section}: not a section that can be overridden (one of {', '.join(_SECTIONS)})"
                )
            if not isinstance(values, dict):
                raise ConfigError(f"overrides.{section}: must be a mapping of settings, got {type(values).__name__}")
            merged[section] = {**merged[section], **values}
        try:
            return Settings(dataset=name, **merged)
        except ValidationError as e:
            raise ConfigError(_one_line(e, prefix="overrides").replace(f"{PARAMS_FILE}: ", "", 1)) from None


_TYPE_TAGS = {"int", "float", "str", "bool", "list", "dict", "tuple"}


# settings whose name changed: a params.yaml that still uses the old name is told the new one
RENAMED = {
    "ingest.min_test_windows": "ingest.min_test_horizons",
    "evaluate.min_test_windows": "evaluate.min_decision_paths",
}


def _one_line(e: ValidationError, prefix: str = "") -> str:
    err = e.errors()[0]
    msg = err["msg"].removeprefix("Value error, ")  # pydantic's prefix for a validator's own message
    # pydantic adds the union member tried ('int', "literal['auto']") to the location: not a key
    loc = ".".join(
        str(p) for p in err["loc"] if p != "validate_" and not (isinstance(p, str) and (p in _TYPE_TAGS or "[" in p))
    )
    where = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
    if err["type"] == "extra_forbidden" and (new := RENAMED.get(loc.removeprefix(f"{prefix}.") if prefix else loc)):
        msg = f"renamed to {new}"
    more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
    return f"{PARAMS_FILE}: {where}: {msg}{more}" if where else f"{PARAMS_FILE}: {msg}{more}"


def find_params(start: Path | None = None) -> Path:
    """params.yaml from $CELLCAST_PARAMS, else the working directory or the nearest parent holding one."""
    env = os.environ.get("CELLCAST_PARAMS")
    if env:
        return Path(env)
    here = Path(start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / PARAMS_FILE).is_file():
            return d / PARAMS_FILE
    return here / PARAMS_FILE


def load_params(path: str | Path | None = None) -> Params:
    p = Path(path) if path else find_params()
    if not p.is_file():
        return Params()
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: must be a mapping of sections, got {type(raw).__name__}")
    try:
        return Params(**raw)
    except ValidationError as e:
        raise ConfigError(_one_line(e).replace(PARAMS_FILE, str(p), 1)) from None
    except ConfigError as e:  # a dataset override, type-checked while the file is read
        raise ConfigError(e.message.replace(PARAMS_FILE, str(p), 1)) from None


def settings_for_run(name: str, settings: Settings | None = None, overrides: dict | None = None) -> Settings:
    """What a flow run works with: `settings` when the caller built them (the CLI, in this process), else
    params.yaml as it is now (found from the working directory, or $CELLCAST_PARAMS) for dataset `name`;
    `overrides` (params sections) on top either way. A deployment passes only the name and its overrides, so an
    edit of params.yaml reaches its next run without a redeploy."""
    if settings is None:
        return load_params().for_dataset(name, overrides)
    if settings.dataset != name:
        raise ConfigError(f"settings: made for dataset '{settings.dataset}', not '{name}'")
    if not overrides:
        return settings
    p = Params(dataset=name, **settings.model_dump(by_alias=True, exclude={"dataset"}))
    return p.for_dataset(name, overrides)
