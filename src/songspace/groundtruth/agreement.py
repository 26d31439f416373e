"""Agreement between annotators: on the quartets judged by more than one of them, how often
they all picked the same odd song.

Read from the quartet CSV's `annotator` column (the judge view writes one; see
`songspace.explorer.judgements`), on the rows `annotations.read_quartet_rows` returns. A
quartet is its three songs in any order; an annotator who judged one quartet more than once
counts with the last answer. Rows the pipeline would refuse are left to `parse_quartets` to
report; here they are passed over.
"""
from __future__ import annotations

from songspace.ingest import normalise_relpath

ANNOTATOR_COLUMN = "annotator"


def annotator_agreement(rows: list[tuple[int, list[str]]], lookup: dict[str, str]) -> dict | None:
    """{annotators, quartets_judged_by_several, all_agree, agreement} from a quartet CSV's rows
    (line, cells) with a header naming an `annotator` column; None without one.

    agreement: all_agree / quartets_judged_by_several (None when no quartet has two annotators).
    Unnamed annotators ('') count as one annotator.
    """
    if not rows:
        return None
    header = [c.strip().lower() for c in rows[0][1]]
    if ANNOTATOR_COLUMN not in header:
        return None
    col = header.index(ANNOTATOR_COLUMN)

    def resolve(name: str) -> str | None:
        return lookup.get(name) or lookup.get(normalise_relpath(name))

    picks: dict[frozenset, dict[str, str]] = {}  # three songs -> {annotator: odd song}
    annotators: set[str] = set()
    for _, cells in rows[1:]:
        if len(cells) < 4:
            continue
        ids = [resolve(c) for c in cells[:4]]
        if None in ids or len(set(ids[:3])) < 3 or ids[3] not in ids[:3]:
            continue
        who = cells[col] if col < len(cells) else ""
        annotators.add(who)
        picks.setdefault(frozenset(ids[:3]), {})[who] = ids[3]
    several = [odds for odds in picks.values() if len(odds) > 1]
    agree = sum(len(set(odds.values())) == 1 for odds in several)
    return {"annotators": len(annotators), "quartets_judged_by_several": len(several),
            "all_agree": agree, "agreement": round(agree / len(several), 4) if several else None}


def agreement_line(report: dict) -> str | None:
    """The annotators' agreement in words, from a groundtruth.json report (None if not there)."""
    a = (report.get("annotations") or {}).get("annotators")
    if not a:
        return None
    if not a["quartets_judged_by_several"]:
        return (f"{a['annotators']} annotator(s); no quartet judged by more than one, so no "
                "agreement between them yet")
    return (f"{a['annotators']} annotators; on the {a['quartets_judged_by_several']} quartet(s) "
            f"judged by more than one, all picked the same odd song in {a['all_agree']} "
            f"({a['agreement']:.0%})")
