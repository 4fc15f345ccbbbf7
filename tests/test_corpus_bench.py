"""bench/corpus.py's pure parts: the remedy a refusal names, the figures read from a training summary, the goal
lines of the table. No training here: the corpus itself is a benchmark (bench/corpus.py)."""

import importlib.util
import math
import sys

import pytest
from conftest import ROOT

from cellcast.pipeline.data.datasets import list_datasets
from cellcast.pipeline.data.findings import REMEDY

spec = importlib.util.spec_from_file_location("corpus", ROOT / "bench" / "corpus.py")
corpus = importlib.util.module_from_spec(spec)
sys.modules["corpus"] = corpus  # dataclasses look their module up there
spec.loader.exec_module(corpus)


def refusal(rule: str, name: str) -> str:
    """A refusal as the CLI prints it: the library's own remedy text, NAME replaced as validation does."""
    text = REMEDY[rule].replace("cellcast validate NAME", f"cellcast validate {name}")
    return f"error: data/{name}/raw.parquet: duplicated timestamps (unique): 3 rows: {text}"


def test_the_remedies_validation_names_are_parsed_into_commands():
    assert corpus.parse_remedy(refusal("long_gap", "jfk"), "jfk") == ["validate", "jfk", "--long-gaps", "segment"]
    # alternatives: the first one listed
    assert corpus.parse_remedy(refusal("unique", "jfk"), "jfk") == ["validate", "jfk", "--dedupe", "first"]


def test_no_remedy_where_the_refusal_names_none_or_it_was_followed_already():
    assert corpus.parse_remedy(refusal("finite", "x"), "x") is None  # no command in it
    assert corpus.parse_remedy(refusal("long_gap", "x"), "y") is None  # another dataset's command
    assert corpus.parse_remedy(refusal("long_gap", "x"), "x", {"validate x --long-gaps segment"}) is None
    generic = "error: dataset 'x' is not ingested; run `cellcast ingest` first; or `cellcast train NAME`"
    assert corpus.parse_remedy(generic, "x") is None
    # the first not yet followed
    two = "run `cellcast validate x --long-gaps segment` then `cellcast validate x --dedupe mean`"
    assert corpus.parse_remedy(two, "x", {"validate x --long-gaps segment"}) == ["validate", "x", "--dedupe", "mean"]


def test_refusal_reason_keeps_the_rule_not_the_path():
    line = "error: data/a10/raw.parquet: too short (min_rows): 204 rows, need at least 397 for lookback 20"
    assert corpus.refusal_reason(line) == "too short (min_rows)"


def summary(promote, metrics, cand_test=0.8, bar_test=1.0):
    return {
        "best": "gru",
        "decision": {"promote": promote, "reason": "x", "metrics": metrics},
        "candidates": [{"name": "rnn", "test": {"mase": 9.0}}, {"name": "gru", "test": {"mase": cand_test}}],
        "baselines": {"test": {"scores": {"seasonal_naive_7": {"mase": bar_test}}}},
        "references": {"mstl": {"mase": 0.9}, "ets": {"status": "over its budget"}, "theta": {"mase": 1.1}},
    }


def test_figures_on_the_promotion_origins_else_the_split():
    m = {"baseline_name": "seasonal_naive_7", "candidate_mase": 0.7, "baseline_mase": 0.95, "coverage_80": 0.79}
    f = corpus.figures(summary(True, m))
    assert (f["candidate_mase"], f["bar_mase"], f["same_origins"], f["coverage_80"]) == (0.7, 0.95, True, 0.79)
    assert f["references"] == {"mstl": 0.9, "ets": None, "theta": 1.1}
    # too few origins for a decision: no promotion metrics; the best candidate's and the bar's split test MASE
    f = corpus.figures(summary(False, {"baseline_name": "seasonal_naive_7"}, cand_test=0.8, bar_test=1.0))
    assert (f["candidate_mase"], f["bar_mase"], f["same_origins"]) == (0.8, 1.0, False)


def row(name, promoted, cand, bar, refs):
    return {
        "name": name,
        "promoted": promoted,
        "candidate_mase": cand,
        "bar_mase": bar,
        "references": dict(zip(corpus.REFERENCES, refs, strict=True)),
    }


def test_goals():
    rows = [
        row("a", True, 0.8, 1.0, (0.9, 1.0, None)),  # beatable, champion: ratio 0.8 / 0.9
        row("b", False, 1.0, 1.0, (0.94, None, None)),  # beatable by a reference, no champion
        row("c", False, 0.99, 1.0, (0.97, 1.2, 1.1)),  # nobody beats the bar by 5%
        row("d", True, 1.1, 1.0, (1.0, None, None)),  # a champion worse than the bar (beatable: no)
        {"name": "e", "refused": "validate", "references": {}},  # never trained
    ]
    g = corpus.goals(rows)
    assert (g["series"], g["trained"], g["beatable"], g["champions"], g["champions_where_beatable"]) == (5, 4, 2, 2, 1)
    assert g["share"] == 0.5 and not g["share_met"]
    assert g["geomean_vs_best_reference"] == pytest.approx(math.sqrt(0.8 / 0.9 * 1.1 / 1.0))
    assert g["worse_than_bar"] == ["d"] and not g["worse_met"]
    assert g["geomean_best_candidate_n"] == 4 and g["decided"] == 4
    g = corpus.goals(rows[:1])
    assert g["share_met"] and g["geomean_met"] and g["worse_met"]


def test_table_reports_the_held_out_series_apart():
    held = sorted(corpus.HELD_OUT)[0]
    text = corpus.table([row("tuned1", True, 0.8, 1.0, (0.9, 1, 1)), row(held, False, 1.0, 1.0, (1, 1, 1))])
    tuned_part, held_part = text.split("**Held out**")[0], text.split("**Held out**")[1].split("**All**")[0]
    assert "| tuned1 |" in tuned_part and f"| {held} |" not in tuned_part
    assert f"| {held} |" in held_part and "| tuned1 |" not in held_part
    assert "geometric mean" in text and "goal >= 80%" in text


def test_the_corpus_is_foreign_and_a_third_is_held_out():
    names = [s.name for s in corpus.CORPUS]
    assert len(names) >= 20 and len(set(names)) == len(names)
    assert not {n.lower() for n in names} & {d.name.lower() for d in list_datasets()}
    assert corpus.HELD_OUT <= set(names)
    assert 0.25 <= len(corpus.HELD_OUT) / len(names) <= 0.4
