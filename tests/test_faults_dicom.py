"""Every input fault of docs/faults.md: read (as is or after a conversion) or
refused with a message naming the file and the problem, in the reader, in data
prep (manifest, good studies kept) and in screening (per-study status)."""

import errno
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pydicom
from pydicom import uid as uids
from pydicom.pixels import get_decoder
import pytest

from bmdjax import prediction
from data_prep import build, dicom_io, landmark_checks
from tests import faults


@pytest.fixture(scope="module")
def base(tmp_path_factory):
  path = faults.write_base(tmp_path_factory.mktemp("faults") / "base.dcm")
  return path, dicom_io.read_radiograph(path).image


def _same_image(image, reference, lossy=False):
  """Correlation with the base image; a larger image is compared at its grid."""
  k = image.shape[0] // reference.shape[0]
  if k > 1:
    image = image[k // 2::k, k // 2::k]
  assert image.shape == reference.shape
  r = np.corrcoef(image.ravel(), reference.ravel())[0, 1]
  assert r > (0.97 if lossy else 0.995), r


def _no_phi(text):
  leaked = [s for s in faults.PHI_STRINGS if s.lower() in text.lower()]
  assert not leaked, f"PHI {leaked} in: {text}"


@pytest.mark.parametrize("fault", faults.FAULTS, ids=[f.name for f in faults.FAULTS])
def test_fault(fault, base, tmp_path):
  path = faults.make(fault, base[0], tmp_path / "study.dcm")
  expected = fault.expected()
  if expected is None:
    rad = dicom_io.read_radiograph(path)
    assert rad.image.dtype == np.float32 and np.isfinite(rad.image).all()
    assert rad.image.min() >= 0.0 and rad.image.max() <= 1.0
    if fault.same:
      _same_image(rad.image, base[1], fault.lossy)
    return
  with pytest.raises(dicom_io.StudyError) as e:
    dicom_io.read_radiograph(path)
  assert e.value.path == path and str(e.value).startswith(path + ": ")
  assert expected in e.value.reason, e.value.reason
  _no_phi(str(e.value))


@pytest.mark.parametrize("ts,package", [
    (uids.JPEG2000Lossless, "pylibjpeg-openjpeg"), (uids.JPEGLosslessSV1, "python-gdcm"),
    (uids.JPEGLSLossless, "pyjpegls"), (uids.RLELossless, "pylibjpeg-rle")])
def test_missing_decoder_is_named(ts, package, base, tmp_path, monkeypatch):
  """With every plugin gone (as in CI for JPEG lossless and JPEG-LS), the
  refusal says which package to install."""
  monkeypatch.setattr(get_decoder(ts), "_available", {})
  ds = pydicom.dcmread(base[0])
  faults._encapsulated(ds, ts, faults._fake_stream(b"\xff\xd8"))
  path = str(tmp_path / "compressed.dcm")
  ds.save_as(path, enforce_file_format=True)
  with pytest.raises(dicom_io.StudyError) as e:
    dicom_io.read_radiograph(path)
  assert path in str(e.value)
  assert f"compressed as {ts.name} ({ts}) and no decoder" in e.value.reason
  assert "pip install 'bmdjax[dicom-codecs]'" in e.value.reason
  assert package in e.value.reason


def test_gdcm_is_never_tried_first_on_jpeg_2000(monkeypatch):
  """python-gdcm aborts the process on a damaged JPEG 2000 stream."""
  decoder = get_decoder(uids.JPEG2000)
  fake = {name: None for name in ("gdcm", "pillow", "pylibjpeg")}
  monkeypatch.setattr(decoder, "_available", fake)
  assert dicom_io._plugins(uids.JPEG2000) == ["pylibjpeg", "pillow"]
  monkeypatch.setattr(decoder, "_available", {"gdcm": None})
  assert dicom_io._plugins(uids.JPEG2000) == ["gdcm"]  # the only one left


@pytest.mark.parametrize("error,reason", [
    (PermissionError(errno.EACCES, "Permission denied"), "permission denied"),
    (OSError(errno.EIO, "Input/output error"), r"file cannot be read \(OSError")])
def test_unreadable_file(error, reason, base, monkeypatch):
  def refuse(*args, **kwargs):
    raise error
  monkeypatch.setattr(dicom_io, "open", refuse, raising=False)
  with pytest.raises(dicom_io.StudyError, match=reason) as e:
    dicom_io.read_radiograph(base[0])
  assert e.value.path == base[0]


_READ_LOCKED = """import sys
from data_prep import dicom_io
try:
  dicom_io.read_radiograph(sys.argv[1])
except dicom_io.StudyError as e:
  print(e.path == sys.argv[1], e)
  sys.exit(0)
sys.exit(3)"""


def test_file_without_read_permission(base, tmp_path):
  """Root reads any file, so as root (CI containers) the read runs in a child
  without the capabilities that override file modes."""
  path = tmp_path / "locked.dcm"
  path.write_bytes(open(base[0], "rb").read())
  path.chmod(0)
  if os.geteuid() != 0:
    with pytest.raises(dicom_io.StudyError, match="permission denied"):
      dicom_io.read_radiograph(path)
    return
  setpriv = shutil.which("setpriv")  # util-linux
  if setpriv is None:
    pytest.skip("root without setpriv cannot drop CAP_DAC_OVERRIDE")
  run = subprocess.run([setpriv, "--bounding-set=-dac_override,-dac_read_search",
                        sys.executable, "-c", _READ_LOCKED, str(path)],
                       capture_output=True, text=True, cwd=os.path.dirname(faults.__file__) + "/..")
  assert run.returncode == 0, run.stdout + run.stderr
  assert run.stdout.startswith("True ") and "permission denied" in run.stdout, run.stdout


def test_size_limits(base, monkeypatch):
  rows, cols = base[1].shape
  monkeypatch.setattr(dicom_io, "MAX_PIXELS", rows * cols - 1)
  with pytest.raises(dicom_io.StudyError, match=f"image is {rows} x {cols} pixels, over"):
    dicom_io.read_radiograph(base[0])
  monkeypatch.setattr(dicom_io, "MAX_PIXELS", rows * cols)
  dicom_io.read_radiograph(base[0])
  monkeypatch.setattr(dicom_io, "MAX_FILE_BYTES", os.path.getsize(base[0]) - 1)
  with pytest.raises(dicom_io.StudyError, match="over the .* limit for one radiograph"):
    dicom_io.read_radiograph(base[0])


# ----------------------------------------------------------------- data prep, predict


@pytest.fixture(scope="module")
def fault_cohort(cohort_dir, tmp_path_factory):
  """Every fault applied to one cohort study, plus three untouched studies, with
  label and landmark rows for all of them."""
  out = tmp_path_factory.mktemp("fault_cohort")
  dicom = out / "dicom"
  dicom.mkdir()
  labels = pd.read_csv(cohort_dir / "labels.csv", dtype=str, keep_default_na=False)
  marks = pd.read_csv(cohort_dir / "landmarks.csv")
  good = list(labels.image[:3])
  for name in good:
    (dicom / name).write_bytes((cohort_dir / "dicom" / name).read_bytes())
  base_name = labels.image[3]
  base = str(cohort_dir / "dicom" / base_name)
  base_rows = pydicom.dcmread(base, stop_before_pixels=True).Rows
  label_rows, mark_rows, expected = [], [], {}
  for i, fault in enumerate(faults.FAULTS):
    name = f"F{i:03d}.dcm"
    faults.make(fault, base, str(dicom / name))
    expected[name] = fault
    label_rows.append(labels.iloc[3].to_dict() | {"image": name, "patient_id": f"Q{i:03d}"})
    lm = marks[marks.image == base_name].iloc[0].copy()
    lm["image"] = name
    if fault.name == "large image":  # landmarks are in pixels of the stored image
      k = pydicom.dcmread(dicom / name, stop_before_pixels=True).Rows / base_rows
      lm.iloc[1:] = lm.iloc[1:].astype(float) * k
    mark_rows.append(lm)
  pd.concat([labels.head(3), pd.DataFrame(label_rows)]).to_csv(out / "labels.csv", index=False)
  pd.concat([marks[marks.image.isin(good)], pd.DataFrame(mark_rows)]).to_csv(
      out / "landmarks.csv", index=False)
  return out, good, expected


# Where prep and predict take the pixel spacing from, for the faults that change
# it (the others keep the base file's PixelSpacing).
SPACING_SOURCE = {"invalid pixel spacing": "estimated", "no spacing": "estimated",
                  "zero spacing, imager spacing": "ImagerPixelSpacing"}


def test_build_records_every_fault_and_keeps_good_studies(fault_cohort):
  out, good, expected = fault_cohort
  summary = build.build(str(out / "dicom"), str(out / "labels.csv"),
                        str(out / "landmarks.csv"), str(out / "prepared"), size=16,
                        grids=(), workers=2)
  manifest = pd.read_csv(out / "prepared" / "manifest.csv", keep_default_na=False)
  assert len(manifest) == len(good) + len(expected)  # one row per input
  by_image = manifest.set_index("image")
  assert (by_image.loc[good, "status"] == "ok").all()
  assert (by_image.loc[good, "spacing_source"] == "PixelSpacing").all()
  for name, fault in expected.items():
    row, why = by_image.loc[name], fault.expected()
    if why is None:
      assert row.status == "ok", (fault.name, row.reason)
      assert row.spacing_source == SPACING_SOURCE.get(fault.name, "PixelSpacing"), fault.name
    else:
      # The row's `image` names the file; the reason says what is wrong.
      assert row.status == "skipped" and why in row.reason, (fault.name, row.reason)
  readable = sum(f.expected() is None for f in expected.values())
  assert summary["counts"]["ok"] == len(good) + readable


def test_predict_reports_every_fault(fault_cohort, tiny_run, monkeypatch):
  out, good, expected = fault_cohort
  _, workdir, _ = tiny_run
  crops, process = {}, build.process_study

  def spy(path, *args, **kwargs):  # what the model is shown, per study
    crops[os.path.basename(path)] = result = process(path, *args, **kwargs)
    return result
  monkeypatch.setattr(prediction, "process_study", spy)
  paths = [str(out / "dicom" / n) for n in [*good, *expected]]
  results = prediction.predict_studies(str(workdir), paths, str(out / "landmarks.csv"))
  by_name = {os.path.basename(r["study"]): r for r in results}
  assert all(by_name[n]["status"] == "ok" for n in good)
  reference = crops["F%03d.dcm" % [f.name for f in faults.FAULTS].index("16-bit")]
  for name, fault in expected.items():
    result, why = by_name[name], fault.expected()
    if why is None:
      assert result["status"] == "ok", (fault.name, result["reason"])
      source = SPACING_SOURCE.get(fault.name, "PixelSpacing")
      assert result["pixel_spacing"]["source"] == source, fault.name
      if source == "estimated":  # from the landmarks the study was cropped with
        lm = np.array(result["landmarks"]["points"])
        assert result["pixel_spacing"]["mm"] == pytest.approx(
            landmark_checks.estimate_spacing(lm), rel=1e-3)
      if fault.same and fault.name != "large image":  # a conversion shows the same
        diff = np.abs(crops[name]["rois"] / 65535.0 - reference["rois"] / 65535.0)
        assert diff.mean() < (0.03 if fault.lossy else 0.01), (fault.name, diff.mean())
    else:
      assert result["status"] == "refused" and why in result["reason"], fault.name
      assert result["reason"].startswith(str(out / "dicom" / name))
      _no_phi(result["reason"])


def test_predict_goes_on_after_an_unexpected_error(fault_cohort, tiny_run, monkeypatch):
  """A bug on one study is that study's `error`, not the end of the batch."""
  out, good, _ = fault_cohort
  _, workdir, _ = tiny_run
  process = build.process_study

  def flaky(path, *args, **kwargs):
    if path.endswith(good[0]):
      raise RuntimeError("simulated failure")
    return process(path, *args, **kwargs)
  monkeypatch.setattr(prediction, "process_study", flaky)
  paths = [str(out / "dicom" / n) for n in good]
  first, *rest = prediction.predict_studies(str(workdir), paths, str(out / "landmarks.csv"))
  assert first["status"] == "error" and "bmd" not in first
  assert first["reason"] == f"{paths[0]}: unexpected RuntimeError: simulated failure"
  assert all(r["status"] == "ok" for r in rest)
  assert "ERROR" in prediction.format_table([first, *rest])
  assert "pixel spacing: " in prediction.format_table(rest)
