"""Data prep: patient-level splits, shard round trip, manifest, bad labels."""

import numpy as np
import pandas as pd
import pytest

from bmdjax import input_pipeline
from data_prep import build, dicom_io, rois
from tests.conftest import TINY_SIZE


def test_patient_level_split_keeps_each_patient_in_one_split():
  rng = np.random.default_rng(0)
  patients = rng.integers(0, 300, size=1000).astype(str)  # many repeat studies
  splits = build.assign_splits(patients, (0.7, 0.15, 0.15), seed=3)
  table = pd.DataFrame({"p": patients, "s": splits})
  assert (table.groupby("p")["s"].nunique() == 1).all()
  share = table.drop_duplicates("p")["s"].value_counts(normalize=True)
  assert abs(share["train"] - 0.7) < 0.02 and abs(share["test"] - 0.15) < 0.02
  # Deterministic in the seed.
  np.testing.assert_array_equal(splits, build.assign_splits(patients, seed=3))


def test_given_split_column_wins_and_conflicts_are_refused():
  patients = ["a", "a", "b", "c", "d"]
  given = ["test", "test", "", "validation", ""]
  splits = build.assign_splits(patients, seed=0, given=given)
  assert list(splits[:2]) == ["test", "test"] and splits[3] == "validation"
  with pytest.raises(SystemExit, match="patient a is given two splits"):
    build.assign_splits(["a", "a"], given=["train", "test"])


def test_prepared_splits_hold_disjoint_patients(prepared_dir):
  ids = {s: {r["patient_id"] for r in input_pipeline.open_split(prepared_dir, s)}
         for s in build.SPLITS}
  assert ids["train"] and ids["validation"] and ids["test"]
  assert not ids["train"] & ids["validation"]
  assert not ids["train"] & ids["test"]
  assert not ids["validation"] & ids["test"]


def test_build_stratifies_the_split_by_default(cohort_dir, prepared_dir):
  """build() itself (not only `bmdjax prepare`) stratifies by sex and
  osteoporosis status against the shipped young-adult table."""
  import json  # pylint: disable=import-outside-toplevel
  from data_prep import labels as label_lib  # pylint: disable=import-outside-toplevel
  from data_prep import reference  # pylint: disable=import-outside-toplevel
  prep = json.loads((prepared_dir / "prep.json").read_text())
  assert prep["split_strata"] == "sex, osteoporosis"
  studies = pd.read_csv(cohort_dir / "labels.csv")
  table = reference.read()[0]
  # Osteoporosis by hand: lowest T over the measured vertebrae <= -2.5.
  t = np.array([[(r[v] - table[(r.sex, v)][0]) / table[(r.sex, v)][1]
                 for v in ("L1", "L2", "L3", "L4")] for _, r in studies.iterrows()])
  strata = [f"{s}/{'osteoporosis' if np.nanmin(row) <= -2.5 else 'other'}"
            for s, row in zip(studies.sex, t)]
  expected = label_lib.assign_splits(studies.patient_id, prep["fractions"], prep["seed"],
                                     strata=strata)
  manifest = pd.read_csv(prepared_dir / "manifest.csv").set_index("image")
  assert list(manifest.loc[studies.image, "split"]) == list(expected)
  unstratified = label_lib.assign_splits(studies.patient_id, prep["fractions"], prep["seed"])
  assert list(unstratified) != list(expected)  # the check can tell the two apart


def test_shard_round_trip_matches_a_fresh_crop(cohort_dir, prepared_dir):
  labels = pd.read_csv(cohort_dir / "labels.csv").set_index("image")
  landmarks = build.load_landmarks(str(cohort_dir / "landmarks.csv"))
  source = input_pipeline.open_split(prepared_dir, "train")
  checked = 0
  for i in range(min(len(source), 3)):
    rec = source[i]
    image = rec["image"].decode()
    row = labels.loc[image]
    assert rec["patient_id"].decode() == row["patient_id"]
    assert rec["sex"] == build.SEXES[row["sex"]] and rec["age"] == row["age"]
    np.testing.assert_allclose(rec["bmd"], row[["L1", "L2", "L3", "L4"]].to_numpy(float),
                               rtol=1e-6, equal_nan=True)
    radiograph = dicom_io.read_radiograph(cohort_dir / "dicom" / image)
    expected = rois.crop_rois(radiograph.image, landmarks[image], TINY_SIZE)
    assert rec["rois"].shape == (14, TINY_SIZE, TINY_SIZE) and rec["rois"].dtype == np.uint16
    np.testing.assert_allclose(rec["rois"] / 65535.0, expected, atol=1 / 65535.0)
    np.testing.assert_allclose(rec["landmarks"], landmarks[image], rtol=1e-6)
    assert rec["patches_2"].shape == (4, TINY_SIZE, TINY_SIZE)
    checked += 1
  assert checked


def test_manifest_lists_every_study(cohort_dir, prepared_dir):
  manifest = pd.read_csv(prepared_dir / "manifest.csv")
  labels = pd.read_csv(cohort_dir / "labels.csv")
  assert set(labels["image"]) <= set(manifest["image"])
  ok = manifest[manifest.status == "ok"]
  total = sum(len(input_pipeline.open_split(prepared_dir, s)) for s in build.SPLITS)
  assert len(ok) == total


def test_bad_inputs_are_reported_not_dropped(cohort_dir, tmp_path):
  labels = pd.read_csv(cohort_dir / "labels.csv", dtype=str, keep_default_na=False)
  bad = labels.head(6).copy()
  bad.loc[0, "L1"] = "abc"                 # non-numeric BMD
  bad.loc[1, "L2"] = "7.5"                 # implausible BMD
  bad.loc[2, "image"] = "missing.dcm"      # no such file
  bad.loc[3, "sex"] = "X"                  # unknown sex
  bad = pd.concat([bad, bad.iloc[[5]]])    # duplicate row
  dicom_dir = tmp_path / "dicom"
  dicom_dir.mkdir()
  for name in labels["image"].head(6):
    (dicom_dir / name).write_bytes((cohort_dir / "dicom" / name).read_bytes())
  (dicom_dir / "garbage.dcm").write_bytes(b"not a dicom at all")  # labelled
  (dicom_dir / "stray.dcm").write_bytes(b"no label row for me")     # unlabelled
  bad.loc[len(bad)] = ["P999", "garbage.dcm", "F", "60", "1.0", "1.0", "1.0", "1.0"]
  bad.to_csv(tmp_path / "labels.csv", index=False)
  marks = pd.read_csv(cohort_dir / "landmarks.csv")
  marks = pd.concat([marks, marks.head(1).assign(image="garbage.dcm")])
  marks.to_csv(tmp_path / "landmarks.csv", index=False)
  summary = build.build(str(dicom_dir), str(tmp_path / "labels.csv"),
                        str(tmp_path / "landmarks.csv"), str(tmp_path / "out"),
                        size=16, grids=(), workers=1)
  manifest = pd.read_csv(tmp_path / "out" / "manifest.csv")
  reasons = " | ".join(manifest.reason.dropna())
  assert "'abc' is not a number" in reasons
  assert "7.5 g/cm2 is outside the plausible range" in reasons
  assert "missing.dcm does not exist" in reasons
  assert "sex 'X' is not F or M" in reasons
  assert "duplicate row" in reasons
  assert "not a readable DICOM" in reasons
  assert manifest.set_index("image").loc["stray.dcm", "reason"] == "file has no row in labels.csv"
  # The two untouched studies survive; every other input is listed with a reason.
  assert summary["counts"]["ok"] == 2 and (manifest.status == "ok").sum() == 2
  assert manifest[manifest.status != "ok"].reason.notna().all()
