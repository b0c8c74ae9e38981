"""The `bmdjax` command: help exits 0, user mistakes exit 2 with one line."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bmdjax(*args, cwd):
  """The installed console script (python -m bmdjax.commands if absent)."""
  script = os.path.join(os.path.dirname(sys.executable), "bmdjax")
  cmd = [script] if os.path.exists(script) else [sys.executable, "-m", "bmdjax.commands"]
  return subprocess.run(cmd + list(args), cwd=cwd, capture_output=True, text=True,
                        timeout=300)


def assert_usage_error(proc, *words):
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
  assert "Traceback" not in proc.stderr, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
  for w in words:
    assert w in lines[0], lines[0]


def test_help_exits_zero_and_lists_commands(tmp_path):
  top = bmdjax("--help", cwd=tmp_path)
  assert top.returncode == 0, top.stderr
  for name in ("prepare", "train", "evaluate", "predict", "landmark-eval"):
    assert name in top.stdout
  train = bmdjax("train", "--help", cwd=tmp_path)
  assert train.returncode == 0, train.stderr
  assert "--workdir" in train.stdout and "--config" in train.stdout
  assert "Traceback" not in train.stderr


@pytest.mark.parametrize("args,words", [
    (["train", "--workdr=x"], ["Unknown command line flag 'workdr'"]),
    (["summary", "--config=attmulroi:demo", "--config.optim.lrr=1"],
     ["no config field 'lrr'", '"lr"']),
    (["summary", "--config=attmulroi:demo,tagret=L2"], ["unknown config argument 'tagret'"]),
    (["summary", "--config=nosuchmodel"], ["no config 'nosuchmodel'", "attmulroi"]),
    (["evaluate", "--workdir=no_such_run"], ["run.json not found"]),
    (["trian"], ["unknown command 'trian'"]),
    (["benchmark", "--config=attmulroi", "--what=trian"], ["unknown --what ['trian']"]),
])
def test_user_mistakes_give_one_line_and_status_2(tmp_path, args, words):
  assert_usage_error(bmdjax(*args, cwd=tmp_path), *words)


def test_missing_data_folder_from_any_folder(tmp_path):
  # A config named from outside the repository; the data folder is not there.
  proc = bmdjax("train", "--config=attmulroi:demo", f"--workdir={tmp_path / 'run'}",
                f"--config.data.dir={tmp_path / 'missing'}", cwd=tmp_path)
  assert_usage_error(proc, "prep.json not found", "bmdjax prepare")
  (tmp_path / "empty").mkdir()  # a folder, but not a prepared dataset
  proc = bmdjax("train", "--config=attmulroi:demo", f"--workdir={tmp_path / 'run'}",
                f"--config.data.dir={tmp_path / 'empty'}", cwd=tmp_path)
  assert_usage_error(proc, "prep.json not found")


def test_empty_landmarks_csv(tmp_path):
  (tmp_path / "dicom").mkdir()
  (tmp_path / "labels.csv").write_text("patient_id,image,sex,age,L1,L2,L3,L4\n"
                                       "p1,a.dcm,F,60,1.0,1.0,1.0,1.0\n")
  (tmp_path / "landmarks.csv").write_text("")
  proc = bmdjax("prepare", f"--dicom_dir={tmp_path / 'dicom'}",
                f"--labels={tmp_path / 'labels.csv'}",
                f"--landmarks={tmp_path / 'landmarks.csv'}", f"--out={tmp_path / 'out'}",
                cwd=tmp_path)
  assert_usage_error(proc, "landmarks.csv", "empty")
