"""Judgements after the judge view: the annotators' agreement and what `songspace report` says."""
from __future__ import annotations

import json

from songspace import groundtruth
from songspace.explorer.judgements import JUDGEMENT_COLUMNS, JudgementStore
from tests.test_cli import run

LOOKUP = {t: t for t in ("a", "b", "c", "d", "e", "f", "g", "h", "i")}


def judged(tmp_path, answers) -> list:
    """Rows of a judgements CSV holding answers [(song1, song2, song3, odd, annotator)]."""
    store = JudgementStore(tmp_path / "quartets.csv")
    for s1, s2, s3, odd, who in answers:
        store.append(dict(zip(JUDGEMENT_COLUMNS, [s1, s2, s3, odd, "train", who, "t", "random", "1"])))
    return groundtruth.read_quartet_rows(store.path)


def test_agreement_on_quartets_judged_by_several_in_any_order(tmp_path):
    rows = judged(tmp_path, [
        ("a", "b", "c", "c", "ann"), ("b", "c", "a", "c", "bob"), ("c", "a", "b", "c", "cy"),  # all agree
        ("d", "e", "f", "d", "ann"), ("f", "d", "e", "e", "bob"),                             # disagree
        ("g", "h", "i", "g", "ann"),                                                          # one only
        ("d", "e", "f", "f", "cy"), ("d", "e", "f", "d", "cy"),   # cy changed its mind: the last counts
    ])
    got = groundtruth.annotator_agreement(rows, LOOKUP)
    assert got == {"annotators": 3, "quartets_judged_by_several": 2, "all_agree": 1, "agreement": 0.5}
    # by a plain reading: per quartet (as a set), each annotator's last odd song
    last: dict = {}
    for _, cells in rows[1:]:
        last.setdefault(frozenset(cells[:3]), {})[cells[5]] = cells[3]
    several = [v for v in last.values() if len(v) > 1]
    assert got["all_agree"] == sum(len(set(v.values())) == 1 for v in several)
    assert "all picked the same odd song in 1 (50%)" in groundtruth.agreement_line({"annotations": {"annotators": got}})


def test_no_annotator_column_or_one_annotator(tmp_path):
    plain = tmp_path / "plain.csv"
    plain.write_text("song1,song2,song3,odd\na,b,c,c\n")
    assert groundtruth.annotator_agreement(groundtruth.read_quartet_rows(plain), LOOKUP) is None
    rows = judged(tmp_path, [("a", "b", "c", "c", ""), ("d", "e", "f", "d", "")])
    got = groundtruth.annotator_agreement(rows, LOOKUP)
    assert got["annotators"] == 1 and got["agreement"] is None
    assert "no quartet judged by more than one" in groundtruth.agreement_line({"annotations": {"annotators": got}})


def test_report_says_how_many_judgements_were_used_and_that_test_quartets_are_judged(tmp_path, capsys):
    metrics = tmp_path / "eval.json"
    metrics.write_text(json.dumps({"headline": {"best_distance": "cosine", "best_scaler": "Normalizer",
                                                "accuracy": 0.61, "n_quartets": 40}}))
    kept = {"train": {"kept": 120, "dropped": 0}, "val": {"kept": 20, "dropped": 0},
            "test": {"kept": 40, "dropped": 0}, "all": {"kept": 180, "dropped": 0}}
    report = {"mode": "annotations", "split": {"method": "file"},
              "annotations": {"lines": 185, "distinct_quartets": 182, "judgements": kept,
                              "quartets": {"train": 120, "val": 20, "test": 40},
                              "annotators": {"annotators": 2, "quartets_judged_by_several": 10,
                                             "all_agree": 7, "agreement": 0.7}}}
    gt_json = tmp_path / "groundtruth.json"
    gt_json.write_text(json.dumps(report))
    code, out, _ = run(capsys, "report", "--metrics", metrics, "--plots", tmp_path, "--groundtruth", gt_json)
    assert code == 0
    assert "judgements used  185 line(s) of data.quartets, 182 distinct quartet(s): train 120, val 20, test 40" in out
    assert "the accuracy above (0.610) is on the 40 judged test quartets" in out
    assert "the file's split column" in out
    assert "2 annotators; on the 10 quartet(s) judged by more than one, all picked the same odd song in 7 (70%)" in out
    gt_json.write_text(json.dumps({**report, "mode": "labels"}))  # labels: nothing said of judgements
    code, out, _ = run(capsys, "report", "--metrics", metrics, "--plots", tmp_path, "--groundtruth", gt_json)
    assert "judged test" not in out
