"""Derived config fields follow the overrides, and a trained run is evaluated
with its own config (run.json): the two ways a report could be silently wrong."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from bmdjax import config_lib
from configs import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
  return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=600)


def test_finalize_derives_from_the_overridden_fields():
  config = common.get_config("mulpat", "target=L2")
  config.target = "all"
  config.data.grid = 4
  config_lib.finalize(config)
  assert (config.model.num_inputs, config.model.num_outputs) == (16, 4)
  config.target = "L3"  # stale derived values are refused, not kept
  with pytest.raises(config_lib.ConfigError, match="num_outputs=4 contradicts target='L3'"):
    config_lib.finalize(config)


def test_for_run_names_the_fields_that_differ():
  run = config_lib.finalize(common.get_config("attmulroi", "target=L1"))
  given = common.get_config("attmulroi", "target=L2,backbone=resnet18")
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.for_run(run.to_dict(), given)
  assert "target: run 'L1', given 'L2'" in str(e.value)
  assert "model.backbone: run 'vgg16', given 'resnet18'" in str(e.value)
  given = common.get_config("attmulroi", "target=L1")
  given.data.dir, given.batch_size = "/elsewhere", 8
  config = config_lib.for_run(run.to_dict(), given)
  assert (config.data.dir, config.batch_size, config.target) == ("/elsewhere", 8, "L1")


def test_target_all_trains_four_outputs_and_evaluate_reads_the_run(prepared_dir, tmp_path):
  workdir = tmp_path / "run"
  config = f"--config=tests/tiny_config.py:{prepared_dir}"
  train = _run("bmdjax.train", config, "--config.target=all", "--config.num_epochs=1",
               f"--workdir={workdir}")
  assert train.returncode == 0, train.stderr[-3000:]
  run = json.loads((workdir / "run.json").read_text())
  assert run["config"]["model"]["num_outputs"] == 4

  # No --config: the run's own (four outputs, its data folder).
  ok = _run("bmdjax.evaluate", f"--workdir={workdir}", "--split=test", "--bootstrap=10")
  assert ok.returncode == 0, ok.stderr[-3000:]
  predictions = pd.read_csv(workdir / "report" / "predictions.csv")
  cols = [f"pred_{v}" for v in common.VERTEBRAE]
  assert set(cols) <= set(predictions.columns)
  assert predictions[cols].notna().all().all()
  assert predictions[cols].std().gt(0).all()  # four distinct outputs, not one broadcast

  # A --config that would reinterpret the weights is refused, saying why.
  bad = _run("bmdjax.evaluate", config, "--config.target=L2", f"--workdir={workdir}",
             "--split=test")
  assert bad.returncode == 2, bad.stderr[-3000:]
  assert "target: run 'all', given 'L2'" in bad.stderr
  assert "Traceback" not in bad.stderr
