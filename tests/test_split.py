"""Patient-level splits and train-only target statistics (a leak of test
patients into either would inflate every reported metric)."""

import json

import numpy as np
import pandas as pd
import pytest

from bmdjax import tasks
from configs.common import VERTEBRAE
from data_prep import build
from tests import helpers


def test_split_sizes_follow_the_fractions_in_patients_not_studies():
  # 20 patients, one with 30 studies: fractions count patients.
  patients = [f"p{i}" for i in range(20)] + ["p0"] * 29
  splits = build.assign_splits(patients, (0.7, 0.15, 0.15), seed=1)
  per_patient = pd.Series(splits, index=patients).groupby(level=0).agg(set)
  assert (per_patient.map(len) == 1).all()
  counts = per_patient.map(lambda s: next(iter(s))).value_counts()
  assert (counts["train"], counts["validation"], counts["test"]) == (14, 3, 3)
  # A different seed deals the patients differently; the same seed does not.
  assert list(build.assign_splits(patients, seed=2)) != list(splits)
  assert list(build.assign_splits(patients, (0.7, 0.15, 0.15), seed=1)) == list(splits)


def test_given_splits_are_kept_and_the_rest_dealt_by_patient():
  patients = ["a", "a", "b", "c", "c", "d", "e"]
  given = ["test", "", "", "", "", "", ""]
  splits = build.assign_splits(patients, seed=0, given=given)
  assert list(splits[:2]) == ["test", "test"]  # the given split covers all of a's studies
  assert splits[3] == splits[4]


def test_target_statistics_come_from_the_training_split_only(prepared_dir):
  prep = json.loads((prepared_dir / "prep.json").read_text())
  man = pd.read_csv(prepared_dir / "manifest.csv")
  ok = man[man.status == "ok"]
  train = ok[ok.split == "train"]
  assert 0 < len(train) < len(ok)
  moved = 0.0
  for v in VERTEBRAE:
    stats = prep["target_stats"][v]
    col = train[v].astype(float)
    col = col[np.isfinite(col)]
    assert stats["mean"] == pytest.approx(np.mean(col), rel=1e-9)
    assert stats["std"] == pytest.approx(np.std(col, ddof=1), rel=1e-9)
    everyone = ok[v].astype(float)
    moved = max(moved, abs(np.mean(everyone[np.isfinite(everyone)]) - stats["mean"]))
  assert moved > 1e-4  # all rows would give other numbers: the check has power
  # The BMD task standardises with exactly these numbers.
  task = tasks.get(helpers.tiny_config(str(prepared_dir)))
  np.testing.assert_allclose(task.scaler.mean, [prep["target_stats"]["L1"]["mean"]], rtol=1e-6)
  np.testing.assert_allclose(task.scaler.std, [prep["target_stats"]["L1"]["std"]], rtol=1e-6)
  assert task.run_info["target_stats"] == prep["target_stats"]


def test_fractions_are_relative_and_the_default_seed_is_0():
  patients = [f"p{i}" for i in range(40)]
  splits = build.assign_splits(patients, (0.7, 0.15, 0.15), seed=0)
  # Fractions are normalised: 7:1.5:1.5 is 70/15/15.
  assert list(build.assign_splits(patients, (7, 1.5, 1.5), seed=0)) == list(splits)
  assert list(build.assign_splits(patients)) == list(splits)  # data_prep.build --seed=0
  assert list(pd.Series(splits).value_counts()[["train", "validation", "test"]]) == [28, 6, 6]
