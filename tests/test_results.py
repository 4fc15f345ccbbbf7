"""The run's table (pipeline/registry/results.py): one typed row list that the CLI text and the Prefect artifact
both render, so the two can never disagree about a candidate, a baseline or a reference."""

from cellcast.pipeline.registry.results import artifact_rows, result_rows, text_table

CANDIDATES = [
    {
        "name": "gru",
        "val": {"mase": 0.61},
        "test": {"mase": 0.59, "smape": 4.2, "mae": 12.5, "coverage_80": 0.83, "coverage_90": 0.91, "crps": 0.3},
        "epochs": 7,
        "seconds": 12.0,
        "parity_ok": True,
    },
    {
        "name": "rnn",
        "val": {"mase": 0.7},
        "test": {"mase": 0.72, "smape": 5.0, "mae": 14.0},
        "epochs": 3,
        "seconds": 4.0,
        "parity_ok": False,
    },
]
BASELINES = {
    "val": {"scores": {"seasonal_naive_48": {"mase": 0.8}}},
    "test": {
        "scores": {
            "seasonal_naive_48": {"mase": 0.68, "smape": 5.5, "mae": 15.0, "coverage": 1.0},
            "seasonal_naive_336": {"mase": 0.9, "smape": 6.0, "mae": 19.0, "coverage": 0.5},
        }
    },
}
REFERENCES = {
    "mstl": {"mase": 0.55, "smape": 4.0, "mae": 11.0, "seconds": 3.0},
    "ets": {"status": "over budget: 200 s"},
}


def test_every_row_reaches_both_renderers_with_the_same_figures():
    rows = result_rows(CANDIDATES, BASELINES, REFERENCES)
    assert [(r.model, r.kind) for r in rows] == [
        ("gru", "candidate"),
        ("rnn", "candidate"),
        ("seasonal_naive_48", "baseline"),
        ("seasonal_naive_336 (50% of windows)", "baseline"),
        ("mstl", "reference"),
        ("ets", "reference"),
    ]
    text = "\n".join(text_table(rows))
    art = {a["model"]: a for a in artifact_rows(rows)}
    assert "gru" in text and "0.590" in text and "83.0%" in text and "FAIL" in text
    assert "seasonal_naive_336 (50% of windows)" in text and "mstl" not in text  # references: their own block
    assert art["gru"]["test MASE"] == 0.59 and art["gru"]["parity"] == "ok" and art["rnn"]["parity"] == "FAIL"
    assert art["baseline: seasonal_naive_48"]["val MASE"] == 0.8
    assert art["reference: mstl"]["test MASE"] == 0.55
    assert art["reference: ets"]["test MASE"] == "over budget: 200 s"
