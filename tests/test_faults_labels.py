"""labels.csv faults: each bad row reported with its line and reason, the good
rows kept; missing vertebrae masked; duplicates, absent images and unlabelled
DICOMs made explicit in the manifest."""

import numpy as np
import pandas as pd
import pytest

from bmdjax import input_pipeline
from configs import common
from data_prep import build, crops

HEADER = "patient_id,image,sex,age,L1,L2,L3,L4\n"


def _labels(tmp_path, rows, header=HEADER, encoding="utf-8"):
  path = tmp_path / "labels.csv"
  path.write_bytes((header + "".join(r + "\n" for r in rows)).encode(encoding))
  return str(path)


# (row, reason in the manifest, or None when the row is kept)
ROWS = [
    ("P1,a.dcm,F,60,0.9,1.0,1.1,1.2", None),
    ("P2,b.dcm,M,55,0.9,,NA,n/a", None),                       # missing vertebrae
    ("P3,c.dcm,F,70,abc,1.0,1.1,1.2", "L1 'abc' is not a number"),
    ("P4,d.dcm,F,70,\"0,95\",1.0,1.1,1.2", "use a point as decimal separator"),
    ("P5,e.dcm,F,70,0.9,-1.2,1.1,1.2", "L2 = -1.2 g/cm2 is negative"),
    ("P6,f.dcm,F,70,0.9,1.0,2.7,1.2", "L3 = 2.7 g/cm2 is outside the plausible range"),
    ("P7,g.dcm,F,70,0.9,1.0,1.1,950", "values in mg/cm2 must be divided by 1000"),
    ("P8,h.dcm,F,70,0,1.0,1.1,1.2", "L1 = 0.0 g/cm2 is outside the plausible range"),
    ("P9,i.dcm,F,70,inf,1.0,1.1,1.2", "L1 'inf' is not a finite number"),
    ("P10,j.dcm,F,70,,,,", "no BMD value for any vertebra"),
    ("P11,k.dcm,X,70,0.9,1.0,1.1,1.2", "sex 'X' is not F or M"),
    ("P12,l.dcm,F,seventy,0.9,1.0,1.1,1.2", "age 'seventy' is not a number"),
    ("P13,m.dcm,F,-3,0.9,1.0,1.1,1.2", "age '-3' is outside 0-120"),
    ("P14,n.dcm,F,170,0.9,1.0,1.1,1.2", "age '170' is outside 0-120"),
    (",o.dcm,F,70,0.9,1.0,1.1,1.2", "empty patient_id or image"),
    ("P16,../outside.dcm,F,70,0.9,1.0,1.1,1.2", "must be a path inside --dicom_dir"),
    ("P17,/abs/p.dcm,F,70,0.9,1.0,1.1,1.2", "must be a path inside --dicom_dir"),
    ("P18,female.dcm,female,70,0.9,1.0,1.1,1.2", None),        # 'female' -> F
]


def test_each_bad_row_is_reported_with_its_line(tmp_path):
  good, rejected = build.load_labels(_labels(tmp_path, [r for r, _ in ROWS]))
  reasons = {r["label_line"]: r["reason"] for r in rejected}
  for line, (row, why) in enumerate(ROWS, start=2):
    if why is None:
      assert line in set(good.label_line), row
    else:
      assert reasons[line].startswith(f"labels line {line}: ") and why in reasons[line], \
          (row, reasons.get(line))
  assert len(good) + len(rejected) == len(ROWS)
  b = good.set_index("image").loc["b.dcm"]
  assert b.L1 == 0.9 and np.isnan([b.L2, b.L3, b.L4]).all()
  assert good.set_index("image").loc["female.dcm", "sex"] == "F"
  assert all(r["status"] == "skipped" for r in rejected)


def test_duplicates_same_values_kept_once_conflicting_refused(tmp_path):
  rows = ["P1,a.dcm,F,60,0.9,1.0,1.1,1.2",
          "P2,b.dcm,M,55,0.9,1.0,1.1,1.2",
          "P1,./a.dcm,F,60,0.90,1.0,1.1,1.2",    # same image and values, other spelling
          "P2,b.dcm,M,55,0.9,1.0,1.1,1.3",       # same image, L4 differs
          "P3,c.dcm,F,60,0.9,,1.1,1.2",
          "P3,c.dcm,F,60,0.9,NA,1.1,1.2"]        # missing either way: same
  good, rejected = build.load_labels(_labels(tmp_path, rows))
  assert list(good.image) == ["a.dcm", "c.dcm"] and list(good.label_line) == [2, 6]
  reasons = {r["label_line"]: r["reason"] for r in rejected}
  assert reasons[4] == "labels line 4: duplicate row of line 2 (same values), ignored"
  assert reasons[7] == "labels line 7: duplicate row of line 6 (same values), ignored"
  for line in (3, 5):  # neither b.dcm row can be trusted
    assert reasons[line] == (f"labels line {line}: image b.dcm has conflicting rows "
                             "(lines 3, 5) that differ in L4; keep one row per image")


def test_spreadsheet_exports_are_read_or_refused_clearly(tmp_path):
  row = "P1,a.dcm,F,60,0.9,1.0,1.1,1.2"
  good, _ = build.load_labels(_labels(tmp_path, [row], header="\ufeff" + HEADER))
  assert list(good.patient_id) == ["P1"]  # Excel's UTF-8 byte order mark
  good, _ = build.load_labels(_labels(tmp_path, [row], header=HEADER.replace(",", " , ")))
  assert list(good.image) == ["a.dcm"]    # spaces around column names
  path = _labels(tmp_path, [row.replace(",", ";")], header=HEADER.replace(",", ";"))
  with pytest.raises(SystemExit, match="semicolon-separated, save it comma-separated"):
    build.load_labels(path)
  with pytest.raises(SystemExit, match="not UTF-8 text"):
    build.load_labels(_labels(tmp_path, ["P1,Åsa.dcm,F,60,0.9,1,1,1"], encoding="latin-1"))
  with pytest.raises(SystemExit, match="missing column.s. L4"):
    build.load_labels(_labels(tmp_path, [row[:-4]], header=HEADER.replace(",L4", "")))


def test_build_keeps_good_rows_masks_missing_vertebrae_lists_strays(cohort_dir, tmp_path):
  labels = pd.read_csv(cohort_dir / "labels.csv", dtype=str, keep_default_na=False)
  rows = labels.head(5).copy()
  rows.loc[0, ["L2", "L3"]] = ["", "NA"]          # two vertebrae excluded
  rows.loc[1, "L4"] = "abc"                       # bad row
  dup = rows.iloc[[2]]                            # same row twice
  ghost = rows.iloc[[3]].assign(image="gone.dcm", patient_id="P_GHOST")  # no such file
  table = pd.concat([rows, dup, ghost])
  table.to_csv(tmp_path / "labels.csv", index=False)
  dicom = tmp_path / "dicom"
  dicom.mkdir()
  for name in labels.image[:6]:  # the 6th has no label row
    (dicom / name).write_bytes((cohort_dir / "dicom" / name).read_bytes())
  summary = build.build(str(dicom), str(tmp_path / "labels.csv"),
                        str(cohort_dir / "landmarks.csv"), str(tmp_path / "out"),
                        size=16, grids=(), workers=1, fractions=(1, 0, 0))
  manifest = pd.read_csv(tmp_path / "out" / "manifest.csv", keep_default_na=False)
  reason = dict(zip(manifest.image, manifest.reason))
  status = manifest.groupby("image").status.apply(set).to_dict()
  assert "labels line 3: L4 'abc' is not a number" == reason[rows.image[1]]
  assert status[rows.image[2]] == {"ok", "skipped"}  # kept once, the repeat reported
  assert "does not exist" in reason["gone.dcm"]
  assert reason[labels.image[5]] == "file has no row in labels.csv"
  assert summary["counts"]["ok"] == 4 and summary["counts"]["skipped"] == 4
  # The study with two vertebrae missing is kept; training masks them.
  source = input_pipeline.open_split(tmp_path / "out", "train")
  records = {source[i]["image"].decode(): source[i] for i in range(len(source))}
  record = records[rows.image[0]]
  assert np.isnan(record["bmd"][1:3]).all() and np.isfinite(record["bmd"][[0, 3]]).all()
  config = common.get_config("attmulroi", "target=all")
  example = input_pipeline.make_example_fn(config)(record)
  np.testing.assert_array_equal(example["mask"], [1, 0, 0, 1])
  assert np.isfinite(example["y"]).all()


def test_non_numeric_landmark_refuses_that_study_only(tmp_path):
  cols = [f"{a}{i}" for i in range(16) for a in "xy"]
  rows = [["a.dcm", *["10"] * 32], ["b.dcm", "abc", *["10"] * 31]]
  pd.DataFrame(rows, columns=["image", *cols]).to_csv(tmp_path / "lm.csv", index=False)
  table = build.load_landmarks(str(tmp_path / "lm.csv"))
  assert np.isfinite(table["a.dcm"]).all() and np.isnan(table["b.dcm"][0, 0])
  assert crops.check_landmarks(table["b.dcm"], (100, 100)) == \
      "landmarks contain empty or non-numeric values"
