"""bmdjax.param_counts and the `summary` command line."""

import json
import os
import subprocess
import sys

import pytest

from bmdjax import param_counts
from bmdjax.config_lib import finalize
from configs import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("name, parts", [
    ("attmulroi", {"backbone": 14_714_688, "transformer": 7_894_528,
                   "local_regressors": 2_105_360, "global_regressor": 131_585}),
    ("mulroi", {"backbone": 14_714_688, "global_regressor": 1_966_593}),
])
def test_component_counts_add_up(name, parts):
  counts = param_counts.component_counts(finalize(common.get_config(name)).model)
  assert counts == {**parts, "total": sum(parts.values())}


def test_counting_ignores_backbone_init():
  config = finalize(common.get_config("baseline", "demo")).model
  config.backbone_init = "/nonexistent/weights.npz"  # never read
  counts = param_counts.component_counts(config)
  assert counts["total"] == counts["backbone"] + counts["global_regressor"]
  assert config.backbone_init == "/nonexistent/weights.npz"


def test_table_lists_every_component():
  table = param_counts.format_table({"backbone": 3, "global_regressor": 1, "total": 4})
  assert table.splitlines()[1].split() == ["backbone", "3", "75.0%"]


def test_command_line_json_with_projection():
  out = subprocess.run(
      [sys.executable, "-m", "bmdjax.summary", "--config=configs/attmulpat.py:demo",
       "--config.model.transformer.dim=32", "--json"],
      cwd=ROOT, capture_output=True, text=True, check=True).stdout
  counts = json.loads(out)
  assert counts["projection"] == 64 * 32 + 32  # 64 VGG features at width 1/8
  assert sum(v for k, v in counts.items() if k != "total") == counts["total"]
