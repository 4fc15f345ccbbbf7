"""Ingest fed random and mutated CSV bytes (hypothesis): every outcome is a canonical frame or a one-line
refusal (a CellcastError), never a traceback, and the input file is never modified."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellcast.pipeline.config import Params
from cellcast.pipeline.data.ingest import ingest_file
from cellcast.pipeline.errors import CellcastError, IngestError

pytestmark = pytest.mark.integration  # hypothesis: hundreds of generated files

DATE_FORMATS = [
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%m/%d/%Y %H:%M",
    "%d.%m.%Y %H:%M",
    "%Y-%m-%d %H:%M:%S%z",
    "%d/%m/%y %H:%M",
    "%m-%d-%Y %I:%M %p",
]
JUNK = [
    "",
    "2024-13-01 00:00",
    "yesterday",
    "31/02/2024",
    "0000-00-00",
    "NaN",
    "inf",
    "-inf",
    "1e999",
    "n/a",
    "--",
    "1,2",
    '"',
    "'",
    ";;",
    "\t",
    "9" * 40,
    "2024-01-01 25:61",
    "\x00",
    "é",
    "\ufeff",
    "0x1F",
    "+",
    "1_000",
]


@st.composite
def valid_csv(draw) -> tuple[bytes, dict]:
    """A well-formed series file and the options that read it."""
    n = draw(st.integers(3, 60))
    freq = draw(st.sampled_from(["30min", "h", "D"]))
    fmt = draw(st.sampled_from(DATE_FORMATS))
    delim = draw(st.sampled_from([",", ";", "\t", "|"]))
    start = pd.Timestamp("2021-01-01") + pd.Timedelta(days=draw(st.integers(0, 700)))
    stamps = pd.date_range(start, periods=n, freq=freq, tz="Europe/Paris" if "%z" in fmt else None).strftime(fmt)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    y = np.round(rng.normal(100, 10, n), 3)
    x = np.round(rng.normal(0, 1, n), 3)
    dec = "," if delim == ";" and draw(st.booleans()) else "."
    num = (lambda v: f"{v}".replace(".", ",")) if dec == "," else str
    lines = [delim.join(["time", "y", "x"])] + [delim.join([s, num(a), num(b)]) for s, a, b in zip(stamps, y, x)]
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    text = eol.join(lines) + (eol if draw(st.booleans()) else "")
    order = {"%d": True, "%m": False}.get(fmt[:2])  # what a user who knows the file would pass
    return text.encode(draw(st.sampled_from(["utf-8", "utf-8-sig", "latin-1"]))), {
        "delimiter": delim,
        "dayfirst": order,
    }


def _mutate(data: bytes, kind: str, pos: float, junk: str, byte: int, delim: str) -> bytes:
    lines = data.split(b"\n")
    i = int(pos * len(lines)) % max(len(lines), 1)
    j = junk.encode("utf-8")
    if kind == "truncate":
        return data[: int(pos * len(data))]
    if kind == "flip":
        k = int(pos * len(data)) % max(len(data), 1)
        return data[:k] + bytes([byte]) + data[k + 1 :] if data else data
    if kind == "delimiter":  # every delimiter of one line, or of the file, swapped
        other = {",": b";", ";": b",", "\t": b"|", "|": b"\t"}[delim]
        if byte % 2:
            return data.replace(delim.encode(), other)
        lines[i] = lines[i].replace(delim.encode(), other)
    elif kind == "bad_date":  # the time field of one row replaced
        cells = lines[i].split(delim.encode())
        cells[0] = j
        lines[i] = delim.encode().join(cells)
    elif kind == "bad_value":
        cells = lines[i].split(delim.encode())
        cells[-1] = j
        lines[i] = delim.encode().join(cells)
    elif kind == "junk_row":
        lines.insert(i, j * (1 + byte % 3))
    elif kind == "blank_row":
        lines.insert(i, b"")
    elif kind == "duplicate_row":
        lines.insert(i, lines[i])
    elif kind == "delete_row":
        del lines[i]
    elif kind == "extra_field":
        lines[i] = lines[i] + delim.encode() + j
    elif kind == "header":  # the header renamed or broken
        lines[0] = j + lines[0][byte % max(len(lines[0]), 1) :]
    return b"\n".join(lines)


MUTATIONS = [
    "truncate",
    "flip",
    "delimiter",
    "bad_date",
    "bad_value",
    "junk_row",
    "blank_row",
    "duplicate_row",
    "delete_row",
    "extra_field",
    "header",
]


@st.composite
def mutated_csv(draw) -> tuple[bytes, dict]:
    data, opts = draw(valid_csv())
    for _ in range(draw(st.integers(0, 4))):
        data = _mutate(
            data,
            draw(st.sampled_from(MUTATIONS)),
            draw(st.floats(0, 1)),
            draw(st.sampled_from(JUNK)),
            draw(st.integers(0, 255)),
            opts["delimiter"],
        )
    return data, opts


inputs = st.one_of(
    mutated_csv(),
    st.tuples(st.binary(max_size=2000), st.just({"delimiter": ","})),
    st.tuples(
        st.text(max_size=500).map(lambda t: ("time,y,x\n" + t).encode("utf-8", "surrogatepass")),
        st.just({"delimiter": ","}),
    ),
)


def _check(data: bytes, declare: bool, opts: dict) -> str:
    """Ingest `data`; `declare`: pass the delimiter and date order the file was written with."""
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        s = Params().for_dataset("fz")
        s = s.model_copy(update={"paths": s.paths.under(root)})
        path = root / "in.csv"
        path.write_bytes(data)
        before = (path.read_bytes(), path.stat().st_mtime_ns)
        try:
            res = ingest_file(
                path,
                time_col="time",
                targets=["y"],
                features=["x"],
                delimiter=opts["delimiter"] if declare else None,
                dayfirst=opts.get("dayfirst") if declare else None,
                settings=s,
            )
        except CellcastError as e:
            msg = str(e)
            assert msg and "\n" not in msg and "\r" not in msg, repr(msg)
            assert "Traceback" not in msg
            if isinstance(e, IngestError):  # the rejected input is kept with its report
                (q,) = list((root / "quarantine").iterdir())
                assert json.loads((q / "report.json").read_text())["error"] == msg
            outcome = "refused"
        else:
            f = res.frame
            assert list(f.columns) == ["timestamp", "y", "x"] and str(f["timestamp"].dtype) == "datetime64[ns]"
            assert f["timestamp"].is_monotonic_increasing and f["timestamp"].notna().all()
            assert f["y"].dtype == np.float64 and f["x"].dtype == np.float64 and len(f) == res.meta.rows >= 3
            assert pd.read_parquet(res.parquet_path).equals(f)
            outcome = "read"
        assert (path.read_bytes(), path.stat().st_mtime_ns) == before, "the input was modified"
        return outcome


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(inputs, st.booleans())
def test_any_bytes_give_a_series_or_one_line(case, declare):
    data, opts = case
    _check(data, declare, opts)


@settings(max_examples=30, deadline=None, database=None)
@given(valid_csv())
def test_the_unmutated_files_are_read(case):
    # the generator's base files are good: a fuzz that only ever saw refusals would prove little
    data, opts = case
    assert _check(data, True, opts) == "read"
