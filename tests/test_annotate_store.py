"""The annotation CSV: atomic writes, resumption, no lost rows, conflicts."""

import csv
import os
import threading

import numpy as np
import pytest

from bmdjax.annotation import store as store_lib
from data_prep import build


def _points(seed):
  return np.random.default_rng(seed).uniform(0, 500, (16, 2)).round(2).tolist()


def test_saved_rows_read_back_and_are_a_landmarks_csv(tmp_path):
  out = str(tmp_path / "sub" / "landmarks.csv")
  s = store_lib.AnnotationStore(out)
  s.save("a/S1.dcm", status="accepted", landmarks=_points(0), shape=(600, 500),
         base_revision=0)
  s.save("S2.dcm", status="unusable", reason="lateral view", base_revision=0)
  # A restarted session (new store) sees both rows: it resumes.
  rows = store_lib.AnnotationStore(out).rows
  assert rows["a/S1.dcm"]["status"] == "accepted" and rows["a/S1.dcm"]["width"] == "500"
  assert rows["S2.dcm"]["reason"] == "lateral view" and rows["S2.dcm"]["x0"] == ""
  # data_prep reads the file as landmarks.csv: exact points, NaN for unusable.
  table = build.load_landmarks(out)
  np.testing.assert_array_equal(table["a/S1.dcm"], np.array(_points(0)))
  assert np.isnan(table["S2.dcm"]).all()


def test_unusable_needs_a_reason_and_accepting_needs_16_points(tmp_path):
  s = store_lib.AnnotationStore(str(tmp_path / "o.csv"))
  with pytest.raises(ValueError, match="needs a reason"):
    s.save("S.dcm", status="unusable", reason="  ")
  with pytest.raises(ValueError, match="16 finite"):
    s.save("S.dcm", status="accepted", landmarks=_points(0)[:15])
  bad = _points(0)
  bad[3][1] = float("nan")
  with pytest.raises(ValueError, match="16 finite"):
    s.save("S.dcm", status="accepted", landmarks=bad)
  assert not os.path.exists(tmp_path / "o.csv")


def test_a_failed_write_leaves_the_previous_file_whole(tmp_path, monkeypatch):
  out = tmp_path / "o.csv"
  s = store_lib.AnnotationStore(str(out))
  s.save("S1.dcm", status="accepted", landmarks=_points(1))
  before = out.read_bytes()
  def crash(*a, **k):
    raise OSError("disk full")
  monkeypatch.setattr(store_lib.os, "replace", crash)
  with pytest.raises(OSError):
    s.save("S2.dcm", status="accepted", landmarks=_points(2))
  assert out.read_bytes() == before  # old file untouched
  assert sorted(os.listdir(tmp_path)) == ["o.csv", "o.csv.lock"]  # no temp file left


def test_two_writers_never_lose_each_others_rows(tmp_path):
  # Two stores on one file (two tabs of two servers): 2 x 40 saves in parallel.
  out = str(tmp_path / "o.csv")
  a, b = store_lib.AnnotationStore(out), store_lib.AnnotationStore(out)
  def work(store, prefix):
    for i in range(40):
      store.save(f"{prefix}{i}.dcm", status="accepted", landmarks=_points(i))
  threads = [threading.Thread(target=work, args=(st, p)) for st, p in ((a, "A"), (b, "B"))]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  with open(out, newline="") as f:
    images = [r["image"] for r in csv.DictReader(f)]
  assert sorted(images) == sorted([f"A{i}.dcm" for i in range(40)] +
                                  [f"B{i}.dcm" for i in range(40)])


def test_saving_over_a_newer_revision_is_refused(tmp_path):
  out = str(tmp_path / "o.csv")
  tab1, tab2 = store_lib.AnnotationStore(out), store_lib.AnnotationStore(out)
  assert tab1.save("S.dcm", status="accepted", landmarks=_points(1),
                   base_revision=0)["revision"] == "1"
  with pytest.raises(store_lib.Conflict):  # tab 2 opened the study before tab 1 saved
    tab2.save("S.dcm", status="accepted", landmarks=_points(2), base_revision=0)
  assert store_lib.landmarks_of(tab1.get("S.dcm")) == _points(1)
  tab2.save("S.dcm", status="unusable", reason="blurred", base_revision=1)
  assert tab1.get("S.dcm")["revision"] == "2"
