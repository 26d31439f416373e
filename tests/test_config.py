"""params.yaml: unknown keys and values out of range are one ConfigError naming the key; the
`check` command and every stage report it as one line with exit code 2."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from songspace import config
from songspace.cli import main

ROOT = Path(__file__).resolve().parents[1]
BAD = [("train.batch_size", 0), ("train.steps_per_epoch", -1), ("train.epochs", 0), ("train.patience", 0),
       ("features.segment_seconds", 0), ("features.segments_per_track", 0), ("features.n_mels", 0),
       ("features.hop_length", 0), ("train.lr", -1), ("train.device", "tpu"), ("evaluate.bootstrap", 0),
       ("evaluate.confidence", 2), ("index.distance", "nope")]


def _raw() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.mark.parametrize("key, value", BAD)
def test_each_bad_value_names_its_key(key, value):
    raw = _raw()
    section, name = key.split(".")
    raw[section][name] = value
    with pytest.raises(config.ConfigError, match=key.replace(".", r"\.")):
        config.from_dict(raw)


def test_check_command_rejects_an_unknown_key(tmp_path, capsys):
    path = tmp_path / "params.yaml"
    path.write_text("modle: resnet18\n" + (ROOT / "params.yaml").read_text())
    assert main(["check", "--params", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown key(s) modle" in err[0]
    assert main(["check", "--params", str(ROOT / "params.yaml")]) == 0
    # dvc.yaml's first stage depends on the whole file, so any edit reruns the check
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert next(iter(stages)) == "params" and stages["params"]["params"] == [{"params.yaml": None}]


def test_a_stage_reports_a_config_error_in_one_line(tmp_path):
    raw = _raw()
    raw["features"]["hop_length"] = 0
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    done = subprocess.run([sys.executable, str(ROOT / "stages" / "features.py"), "--tracks", "x.csv",
                           "--out", str(tmp_path / "f"), "--params", str(tmp_path / "params.yaml")],
                          capture_output=True, text=True, env={"PYTHONPATH": str(ROOT / "src"), "PATH": ""})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("features: error:") and "features.hop_length" in lines[0]
