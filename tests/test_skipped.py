"""skipped.csv: one schema, one writer and one reader for every stage that leaves songs out."""
import pytest

from songspace import skipped
from songspace.errors import UserError


def test_round_trip_sorted_with_empty_fields(tmp_path):
    rows = [{"track_id": "b", "path": "/m/b.wav", "reason": skipped.UNUSABLE, "detail": "silent"},
            {"path": "/m/a.mp3", "reason": "duplicate", "detail": "same bytes as c"}]
    path = skipped.write(skipped.table(rows), tmp_path / "reports" / skipped.FILE_NAME)
    back = skipped.read(path)
    assert list(back.columns) == list(skipped.COLUMNS)
    assert back.to_dict("records") == [
        {"track_id": "", "path": "/m/a.mp3", "reason": "duplicate", "detail": "same bytes as c"},
        {"track_id": "b", "path": "/m/b.wav", "reason": "unusable", "detail": "silent"}]
    assert skipped.read(skipped.write(skipped.table([]), tmp_path / "empty.csv")).empty


def test_a_file_of_another_schema_is_refused_by_name(tmp_path):
    old = tmp_path / "skipped.csv"
    old.write_text("path,reason,detail\n/m/a.mp3,duplicate,x\n")
    with pytest.raises(UserError, match="skipped.csv: columns"):
        skipped.read(old)
