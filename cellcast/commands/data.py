"""`cellcast datasets`, `cellcast ingest`, `cellcast validate`: data in."""

from __future__ import annotations

from pathlib import Path

import typer

from cellcast.commands import configure_tracking, friendly, settings_for
from cellcast.pipeline.errors import ConfigError


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(
        help="Data versions kept by DVC: the data a registered model was trained on, back by model or version.",
        no_args_is_help=True,
    )
    app.add_typer(data_app, name="data")
    data_app.command("get")(data_get)
    data_app.command("gc")(data_gc)
    app.command()(datasets)
    app.command()(ingest)
    app.command()(validate)


@friendly
def data_get(
    name: str = typer.Argument(..., help="dataset name; the model is <name>-forecaster"),
    model: str | None = typer.Option(None, "--model", help="the version an alias names: champion | challenger"),
    version: int | None = typer.Option(None, "--version", help="a registered version number"),
    out: Path = typer.Option(..., "--out", help="folder to write validated.parquet into (created if missing)"),
) -> None:
    """Write the validated data a registered model version was trained on into --out, from the local DVC cache
    or the DVC remote, checked against the version's data_md5."""
    from cellcast.pipeline.data import versioning
    from cellcast.pipeline.errors import NotFoundError
    from cellcast.pipeline.files import md5_file
    from cellcast.pipeline.registry import tracking

    settings = settings_for(name)
    if (model is None) == (version is None):
        raise ConfigError("data get: give exactly one of --model ALIAS, --version N")
    configure_tracking(settings)
    mname = settings.model_name
    if model is not None:
        info = tracking.get_alias(mname, model)
        if info is None:
            raise NotFoundError(f"--model {model}: model '{mname}' has no version with that alias")
    else:
        info = tracking.get_version(mname, version)
    md5 = info.tags.get("data_md5")
    if not md5 or md5 == "unknown":
        raise NotFoundError(f"{mname} v{info.version}: no data_md5 tag (registered before data was versioned)")
    dst = out / "validated.parquet"
    if dst.exists() and md5_file(dst) != md5:
        raise ConfigError(f"{dst}: exists with other data; choose another --out (nothing is overwritten)")
    versioning.fetch(md5, dst, settings.versioning.remote)
    typer.echo(f"{dst}: the data {mname} v{info.version} was trained on (md5 {md5}, checked)")


@friendly
def data_gc(
    cloud: bool = typer.Option(False, "--cloud", help="the DVC remote too"),
    dry_run: bool = typer.Option(False, "--dry-run", help="count what would be removed, remove nothing"),
) -> None:
    """Remove from the DVC cache (and with --cloud the remote) what neither dvc.lock nor a registered model
    version uses: every version's training data is kept."""
    from cellcast.pipeline.data import versioning
    from cellcast.pipeline.registry import tracking

    settings = settings_for()
    configure_tracking(settings)
    named = tracking.data_versions(settings.registry.model_suffix)
    removed = versioning.collect_garbage(set(named), cloud, settings.versioning.remote, dry_run)
    verb = "would remove" if dry_run else "removed"
    typer.echo(
        f"kept the data of {sum(len(v) for v in named.values())} registered versions ({len(named)} data versions) "
        f"and what dvc.lock uses; {verb} {removed['local']} objects from the local cache"
        + (f" and {removed['remote']} from the remote" if removed["remote"] is not None else "")
    )


@friendly
def datasets() -> None:
    """List the bundled real datasets (loaded offline from installed packages)."""
    from cellcast.pipeline.data.datasets import list_datasets

    rows = [("name", "domain", "source", "freq", "series", "rows", "vars", "licence")]
    rows += [
        (
            d.name,
            d.domain,
            d.source,
            d.freq,
            str(d.series) + (f" ({', '.join(d.id_cols)})" if d.id_cols else ""),
            str(d.rows),
            str(d.variables),
            d.licence,
        )
        for d in list_datasets()
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])


# The options of `cellcast ingest`: where the data comes from, how its columns and times are read.
_CSV = typer.Option(None, "--csv", help="a CSV file (delimiter sniffed: , ; tab |)")
_PARQUET = typer.Option(None, "--parquet", help="a Parquet file")
_BUNDLED = typer.Option(None, "--bundled", help="a bundled dataset (see `cellcast datasets`)")
_QUERY = typer.Option(
    None,
    "--query",
    help="a SELECT run on the database whose SQLAlchemy URL is in $CELLCAST_DB_URL (or --db-env); "
    "a scheduled refresh runs it again for the rows after the last timestamp",
)
_DB_ENV = typer.Option(
    None, "--db-env", help="the environment variable holding the database URL (default CELLCAST_DB_URL)"
)
_RECORDED = typer.Option(
    None,
    "--recorded",
    help="ingest dataset NAME again as sources.yaml records it (what DVC's ingest@NAME stage runs)",
)
_NAME = typer.Option(None, "--name", help="dataset name (folder under data/); required for files")
_TIME_COL = typer.Option(
    None, "--time-col", help="the time column of the file (default: its one column whose values read as dates)"
)
_TARGET = typer.Option(
    [],
    "--target",
    help="target column (repeat for several; default: the file's one numeric column besides the time column "
    "and the columns given other parts)",
)
_FEATURES = typer.Option("", "--features", help="feature columns, comma-separated")
_ID_COL = typer.Option(
    [],
    "--id-col",
    help="a column naming each row's series (long format: a panel; repeat for several: the series key is their tuple)",
)
_FUTURE_FEATURES = typer.Option(
    None,
    "--future-features",
    help="columns whose values are known ahead (a planned promotion, a weather "
    "forecast), comma-separated: features the model also reads for the "
    "horizon; rows after the last target observation may carry them "
    "(default: params.yaml ingest.future_features)",
)
_FREQ = typer.Option(None, "--freq", help="pandas frequency alias (e.g. 30min, h, D, B); else inferred")
_AGG = typer.Option(
    None, "--agg", help="readings at irregular times put on the --freq grid per series: mean | sum | last | max"
)
_DELIMITER = typer.Option(None, "--delimiter", help="CSV delimiter (overrides sniffing; 'tab' for tabs)")
_TIME_FORMAT = typer.Option(
    None, "--time-format", help="strftime format of the time column, e.g. %d/%m/%Y %H:%M (else detected)"
)
_TIME_UNIT = typer.Option(None, "--time-unit", help="the time column holds Unix times in s | ms | us | ns")
_STATIC = typer.Option(
    None,
    "--static",
    help="a panel's numeric columns constant within each series (a capacity, a floor area), "
    "comma-separated: kept once per series and read by the global model "
    "(default: params.yaml ingest.static; features constant within every series are found too)",
)
_SCHEDULE = typer.Option(
    None,
    "--schedule",
    help="the steps the series is observed at: auto (detected), none (24/7), or opening hours like "
    "'Mon-Fri 08:00-16:30' (last open step included) or 'Mon-Fri' for trading days "
    "(default: params.yaml ingest.schedule)",
)
_DAYFIRST = typer.Option(
    None,
    "--dayfirst/--monthfirst",
    help="dates are day-first (31/01/2024) or month-first (01/31/2024); "
    "else read so only where the file is unambiguous about it",
)


@friendly
def ingest(
    csv: Path | None = _CSV,
    parquet: Path | None = _PARQUET,
    bundled: str | None = _BUNDLED,
    query: str | None = _QUERY,
    db_env: str | None = _DB_ENV,
    recorded: str | None = _RECORDED,
    name: str | None = _NAME,
    time_col: str | None = _TIME_COL,
    target: list[str] = _TARGET,
    features: str = _FEATURES,
    id_col: list[str] = _ID_COL,
    future_features: str | None = _FUTURE_FEATURES,
    freq: str | None = _FREQ,
    agg: str | None = _AGG,
    delimiter: str | None = _DELIMITER,
    time_format: str | None = _TIME_FORMAT,
    time_unit: str | None = _TIME_UNIT,
    static: str | None = _STATIC,
    schedule: str | None = _SCHEDULE,
    dayfirst: bool | None = _DAYFIRST,
) -> None:
    """Read a CSV/Parquet file or a bundled dataset into data/NAME/raw.parquet + raw.json."""
    from cellcast.pipeline.config import check_dataset_name
    from cellcast.pipeline.data.ingest import ingest_file

    _check_one_source(csv=csv, parquet=parquet, query=query, bundled=bundled, recorded=recorded, db_env=db_env)
    future = _columns(future_features)
    if recorded is not None:
        res = _ingest_recorded(check_dataset_name(recorded, "--recorded"))
    elif bundled is not None:
        res = _ingest_bundled(bundled, name, future)
    else:
        name = _file_names(name)
        if query is not None:
            from cellcast.pipeline.data.database import DEFAULT_ENV, ingest_query

            if not time_col:  # a file's columns are read from it when not named; a query's result is not
                raise ConfigError("--time-col: required with --query")
            res = ingest_query(
                query,
                time_col=time_col,
                targets=list(target),
                env=db_env or DEFAULT_ENV,
                settings=settings_for(name),
                features=_columns(features),
                freq=freq,
                future_features=future,
            )
        else:
            path = csv or parquet
            assert path is not None  # one of --csv / --parquet: _check_one_source
            res = ingest_file(
                path,
                time_col=time_col,
                targets=list(target),
                features=_columns(features),
                freq=freq,
                fmt="csv" if csv else "parquet",
                delimiter=delimiter,
                time_format=time_format,
                time_unit=time_unit,
                dayfirst=dayfirst,
                id_cols=list(id_col),
                agg=agg,
                settings=settings_for(name),
                future_features=future,
                schedule=schedule,
                static=_columns(static),
            )
    versioned = None if recorded is not None else _version_ingest(res)
    typer.echo(ingest_summary(res))
    if versioned:
        typer.echo(versioned)


def _check_one_source(**given) -> None:
    """Exactly one of --csv, --parquet, --query, --bundled, --recorded; --db-env only with --query."""
    db_env = given.pop("db_env")
    if sum(v is not None for v in given.values()) != 1:
        raise ConfigError(
            "ingest: give exactly one of --csv PATH, --parquet PATH, --query SQL, --bundled NAME, --recorded NAME"
        )
    if db_env is not None and given["query"] is None:
        raise ConfigError("--db-env: only with --query")


def _columns(text: str | None) -> list[str] | None:
    """A comma-separated option as column names; None when the option was not given."""
    return None if text is None else [c.strip() for c in text.split(",") if c.strip()]


def _ingest_bundled(bundled: str, name: str | None, future: list[str] | None):
    """`ingest --bundled`: the dataset keeps its own name and its known-future columns from params.yaml."""
    from cellcast.pipeline.data.ingest import ingest_bundled

    if future is not None:
        raise ConfigError(
            "--future-features: a bundled dataset takes them from params.yaml (datasets.NAME.ingest.future_features)"
        )
    if name and name != bundled:
        raise ConfigError(f"--name '{name}': a bundled dataset keeps its own name ('{bundled}')")
    return ingest_bundled(settings_for(bundled))


def _file_names(name: str | None) -> str:
    """A file or a query needs --name (a valid dataset name)."""
    from cellcast.pipeline.config import check_dataset_name

    if not name:
        raise ConfigError("--name: required when ingesting a file")
    check_dataset_name(name, "--name")
    return name


@friendly
def validate(
    name: str = typer.Argument(..., help="dataset name (ingested under data/NAME)"),
    dedupe: str | None = typer.Option(
        None,
        "--dedupe",
        help="duplicated timestamps: reject|first|last|mean (overrides params.yaml for NAME from now on)",
    ),
    long_gaps: str | None = typer.Option(
        None,
        "--long-gaps",
        help="gaps longer than ingest.max_fill_steps: "
        "reject|segment (kept as breaks no window crosses; overrides params.yaml for NAME "
        "from now on)",
    ),
    bad_series: str | None = typer.Option(
        None,
        "--bad-series",
        help="a panel's series that breaks a rule: reject "
        "(the dataset fails) | drop (quarantined, the rest kept; overrides "
        "params.yaml)",
    ),
) -> None:
    """Validate data/NAME/raw.parquet (GX suite + gap/duplicate policy) into validated.parquet."""
    from cellcast.pipeline.data.validation import record_policy, validate_dataset

    settings = settings_for(name)
    policy = _policy(dedupe=dedupe, long_gaps=long_gaps, bad_series=bad_series)
    if policy:  # kept for NAME: train, scheduled refreshes and forecasts validate it the same way
        record_policy(settings, policy)
    rep = validate_dataset(settings)
    note = _record(name, ["validate"])
    if note:
        typer.echo(note, err=True)
    if rep.panel is not None:
        typer.echo(_panel_summary(name, rep, settings))
        return
    filled = sum(rep.filled.values())
    typer.echo(
        f"{name}: valid, {rep.rows_in} -> {rep.rows_out} rows, {filled} points filled, "
        f"{len(rep.breaks)} breaks, {rep.dedupe.get('duplicated_rows', 0)} duplicates resolved, "
        f"windows train/val/test {rep.windows.get('train')}/{rep.windows.get('val')}/{rep.windows.get('test')} "
        f"({rep.windows.get('test_origins')} non-overlapping test windows)"
        + _promotion_hint(rep.windows.get("test_origins"), settings)
        + f"; report {rep.report_path}"
    )


_POLICY_CHOICES = {
    "dedupe": ("reject", "first", "last", "mean"),
    "long_gaps": ("reject", "segment"),
    "bad_series": ("reject", "drop"),
}


def _policy(**given: str | None) -> dict[str, str]:
    """The validation policy options given (--dedupe, --long-gaps, --bad-series), each checked against its choices."""
    policy = {}
    for key, value in given.items():
        if value is not None:
            allowed = _POLICY_CHOICES[key]
            if value not in allowed:
                raise ConfigError(f"--{key.replace('_', '-')} '{value}': must be one of {', '.join(allowed)}")
            policy[key] = value
    return policy


def _record(name: str, stages: list[str]) -> str | None:
    """dvc.lock records what a command just wrote for `name` (its DVC stages); a warning line when DVC could not."""
    from cellcast.pipeline.data import versioning

    try:
        versioning.commit(name, stages)
    except Exception as e:  # the command's work is done either way: `dvc commit` can record it later
        why = " ".join(str(e).split())[:200]
        return f"warning: dvc.lock not updated for {', '.join(f'{s}@{name}' for s in stages)} ({why})"
    return None


def ingest_summary(res) -> str:
    """One line of what an ingest read: rows, span, frequency, gaps, duplicates, a panel's series, known-ahead rows."""
    m = res.meta
    g = m.gaps
    panel = (
        f"panel of {len(m.panel['series'])} series (id {', '.join(m.panel['id_cols'])}; "
        f"{m.panel['row_groups']} row group{'s' if m.panel['row_groups'] != 1 else ''}), "
        if m.panel
        else ""
    )
    if m.resample:
        r = m.resample
        panel += (
            f"{r['readings']} readings aggregated ({r['agg']}) into {r['grid_points']} grid points "
            f"({r['merged_points']} of several), "
        )
    chosen = (m.extra or {}).get("chosen_columns") or {}
    read_from_file = " and ".join(
        f"{what} {', '.join(repr(c) for c in ([v] if isinstance(v, str) else v))}"
        for what, v in (("time column", chosen.get("time_col")), ("target", chosen.get("targets")))
        if v
    )
    if read_from_file:  # not named by the command: say which were taken, and how to take others
        panel = f"{read_from_file} read from the file's columns (--time-col / --target choose others); " + panel
    return (
        f"{res.parquet_path}: {panel}{m.rows} rows, {m.start} .. {m.end}, freq {m.freq} ({m.freq_source}), "
        f"{g['count']} gaps ({g['missing_steps']} missing steps, longest {g['longest_steps']}), "
        f"{m.duplicates} duplicated timestamps"
        + (
            f", known ahead: {', '.join(m.future_features)} ({m.future_rows} rows after the last observation)"
            if m.future_features
            else ""
        )
        + (f", {m.schedule_line()}" if m.schedule else "")
        + (
            ", static per series: " + ", ".join(f"{c} ({how})" for c, how in m.static["source"].items())
            if m.static
            else ""
        )
        + (
            f", dates read {m.extra['time_reading']['order']}"
            if (m.extra.get("time_reading") or {}).get("order")
            else ""
        )
    )


def _ingest_recorded(name: str):
    """Ingest `name` as its sources.yaml entry says (the DVC stage's command): a bundled dataset or a file."""
    from cellcast.pipeline.data import versioning
    from cellcast.pipeline.data.ingest import ingest_bundled, ingest_file
    from cellcast.pipeline.errors import NotFoundError

    root = versioning.pipeline_root()
    entry = versioning.source_entry(name, root) if root is not None else None
    if root is None or entry is None:
        raise NotFoundError(f"{versioning.SOURCES_FILE}: no dataset '{name}'; ingest it with --csv / --parquet first")
    how = dict(entry.get("ingest") or {})
    if "bundled" in how:
        return ingest_bundled(settings_for(how["bundled"]))
    path = Path(how.pop("path"))
    return ingest_file(path if path.is_absolute() else root / path, settings=settings_for(name), **how)


def _version_ingest(res) -> str | None:
    """After an ingest typed by a person: the dataset joins DVC's pipeline (sources.yaml: its stages in dvc.yaml, its
    source file a dependency) and dvc.lock records this ingest. A line saying so; None outside a DVC project."""
    from cellcast.pipeline.config import load_params
    from cellcast.pipeline.data import versioning
    from cellcast.pipeline.data.ingest import source_of

    root = versioning.pipeline_root()
    if root is None:
        return None
    name, settings = res.name, settings_for(res.name)
    how = source_of(settings)
    if how is None:  # bundled: its loader is the source
        loader = root / "pipeline" / "data" / "datasets.py"
        if versioning.source_entry(name, root) is not None or not loader.is_file():
            source, how = None, None
        else:
            source, how = loader, {"bundled": name}
    else:
        source = Path(how["path"])
        how = {k: v for k, v in how.items() if v is not None}
        how["path"] = versioning.stage_source(source, root)
    if how is not None and source is not None:
        versioning.register_source(name, source, how, name in load_params().datasets, root)
        if "bundled" not in how:  # a user's file (outside the repository, or a query's snapshot in data/): kept too
            versioning.keep(source, settings.versioning.push, settings.versioning.remote, root)
    try:
        done = versioning.commit(name, ["ingest"], root)
    except Exception as e:  # the data is ingested either way; DVC's record of it can be made with `dvc commit`
        return f"warning: dvc.lock not updated for ingest@{name} ({' '.join(str(e).split())[:200]}); run `dvc commit`"
    entry = versioning.source_entry(name, root) or {}
    return f"versioned by DVC: stage {', '.join(done) or 'none'}, source {entry.get('source')}" if done else None


def _promotion_hint(origins, settings) -> str:
    """The data rule (ingest.min_test_horizons) lets a shorter test through than promotion's statistical test needs
    (evaluate.min_decision_paths): say so before a training, not after it."""
    need = settings.evaluate.min_decision_paths
    if origins is None or origins >= need:
        return ""
    return (
        f" (fewer than evaluate.min_decision_paths {need}: a model trains and registers but cannot be promoted; "
        f"supply more rows or shorten window.horizon)"
    )


def _panel_summary(name: str, rep, settings) -> str:
    p = rep.panel
    dropped = ""
    if p["dropped_series"]:
        shown = ", ".join(f"'{sid}': {f['rule']}" for sid, f in list(p["dropped_series"].items())[:5])
        more = f" and {len(p['dropped_series']) - 5} more" if len(p["dropped_series"]) > 5 else ""
        dropped = f" ({shown}{more}; kept in {rep.quarantine_path})"
    w = p["window"]
    own = [r for r in p["series"].values() if r["status"] == "ok"]
    pooled = sum(int(r["windows"].get("test_origins", 0)) for r in own)
    grown = w.get("test_horizons", 1)
    split = (
        f", test splits grown to hold {grown} horizons a series ({w.get('test_need')} needed)"
        if grown > 1 and own
        else ""
    )
    tested = f"; {pooled} non-overlapping test windows pooled" + _promotion_hint(pooled, settings) if own else ""
    remedy = f"; no series holds splits of its own, so no model can train: {p['remedy']}" if p.get("remedy") else ""
    return (
        f"{name}: valid panel, {p['series_in']} series in, {p['kept']} kept ({p['cold_start']} cold start: too "
        f"short for their own validation/test split), {p['dropped']} dropped{dropped}; {rep.rows_in} -> "
        f"{rep.rows_out} rows, {p['filled']} points filled, {p['breaks']} breaks; judged on lookback "
        f"{w['lookback']} + horizon {w['horizon']}{split}{tested}{remedy}; report {rep.report_path}"
    )
