"""Headers of real vendor exports: a TIFF header in the preamble, raw FOR
PROCESSING images, and pixel spacing that is missing, zero or implausible."""

import numpy as np
import pandas as pd
import pydicom
from pydicom import uid as uids
import pytest

from data_prep import build, dicom_io, landmark_checks, rois
from tests import faults


@pytest.fixture
def base(tmp_path):
  path = faults.write_base(tmp_path / "base.dcm")
  return path, dicom_io.read_radiograph(path)


def test_tiff_header_in_the_preamble_is_read(base, tmp_path):
  ds = pydicom.dcmread(base[0])
  ds.preamble = faults.tiff_preamble()
  path = str(tmp_path / "dual.dcm")
  ds.save_as(path, enforce_file_format=True)
  raw = open(path, "rb").read()
  assert raw[:4] == b"II*\x00" and raw[128:132] == b"DICM"
  rad = dicom_io.read_radiograph(path)
  np.testing.assert_array_equal(rad.image, base[1].image)
  assert rad.pixel_spacing == base[1].pixel_spacing and rad.modality == "DX"


@pytest.mark.parametrize("magic", [b"II*\x00", b"MM\x00*", b"\x89PNG"])
def test_other_formats_are_still_named_without_dicm(magic, tmp_path):
  """Only DICM at byte 128 makes a preamble acceptable."""
  path = tmp_path / "x.dcm"
  path.write_bytes(magic + bytes(400))
  with pytest.raises(dicom_io.StudyError, match="not a readable DICOM file: it is a"):
    dicom_io.read_radiograph(path)


@pytest.mark.parametrize("attrs", [
    {"PresentationIntentType": "FOR PROCESSING"},
    {"SOPClassUID": uids.DigitalXRayImageStorageForProcessing},
    {"SOPClassUID": uids.DigitalXRayImageStorageForProcessing,
     "PresentationIntentType": None}],
    ids=["intent", "sop class", "sop class without intent"])
def test_for_processing_is_refused(attrs, base, tmp_path):
  ds = pydicom.dcmread(base[0])
  for key, value in attrs.items():
    if value is None:
      delattr(ds, key)
    else:
      setattr(ds, key, value)
  if "SOPClassUID" in attrs:
    ds.file_meta.MediaStorageSOPClassUID = attrs["SOPClassUID"]
  path = str(tmp_path / "raw.dcm")
  ds.save_as(path, enforce_file_format=True)
  with pytest.raises(dicom_io.StudyError) as e:
    dicom_io.read_radiograph(path)
  assert e.value.path == path
  assert "a FOR PROCESSING image" in e.value.reason
  assert "export the FOR PRESENTATION image" in e.value.reason


def test_for_presentation_is_read(base):
  assert pydicom.dcmread(base[0]).PresentationIntentType == "FOR PRESENTATION"
  assert base[1].image.shape == faults.anatomy().shape


# ----------------------------------------------------------------- pixel spacing

# header attributes -> (spacing in mm, source); written by hand from PS3.3
# 10.7.1.3 and the DX module: PixelSpacing if plausible, else ImagerPixelSpacing
# divided by the magnification factor when stated, else unknown.
SPACING = {
    "stated": (dict(PixelSpacing=[0.175, 0.175], ImagerPixelSpacing=[0.2, 0.2]),
               0.175, "PixelSpacing"),
    "zero, imager": (dict(PixelSpacing=["0.000", "0.000"], ImagerPixelSpacing=[0.15, 0.15]),
                     0.15, "ImagerPixelSpacing"),
    "zero, imager, magnification": (
        dict(PixelSpacing=[0, 0], ImagerPixelSpacing=[0.15, 0.15],
             EstimatedRadiographicMagnificationFactor=1.2), 0.125,
        "ImagerPixelSpacing/magnification"),
    "missing, imager": (dict(PixelSpacing=None, ImagerPixelSpacing=[0.139, 0.139]),
                        0.139, "ImagerPixelSpacing"),
    "negative": (dict(PixelSpacing=[-0.2, -0.2], ImagerPixelSpacing=[0.16, 0.16]),
                 0.16, "ImagerPixelSpacing"),
    "one zero value": (dict(PixelSpacing=[0.2, 0], ImagerPixelSpacing=[0.16, 0.16]),
                       0.16, "ImagerPixelSpacing"),
    "implausible (metres?)": (dict(PixelSpacing=[0.0002, 0.0002], ImagerPixelSpacing=None),
                              np.nan, "unknown"),
    "implausible (cm?)": (dict(PixelSpacing=[17.5, 17.5], ImagerPixelSpacing=None),
                          np.nan, "unknown"),
    # Source-to-image over source-to-object distance: below 1 is impossible, and
    # above 3 no chest film; both ignored.
    "magnification below 1 ignored": (
        dict(PixelSpacing=None, ImagerPixelSpacing=[0.15, 0.15],
             EstimatedRadiographicMagnificationFactor=0.8), 0.15, "ImagerPixelSpacing"),
    "magnification above 3 ignored": (
        dict(PixelSpacing=None, ImagerPixelSpacing=[0.15, 0.15],
             EstimatedRadiographicMagnificationFactor=5), 0.15, "ImagerPixelSpacing"),
    "zero, no imager (the vendor film)": (
        dict(PixelSpacing=["0.000", "0.000"], ImagerPixelSpacing=None), np.nan, "unknown"),
    "both missing": (dict(PixelSpacing=None, ImagerPixelSpacing=None), np.nan, "unknown"),
    "anisotropic: row spacing": (dict(PixelSpacing=[0.15, 0.3]), 0.15, "PixelSpacing"),
}


def _with(path, out, attrs):
  ds = pydicom.dcmread(path)
  faults._set(**attrs)(ds)
  ds.save_as(out, enforce_file_format=True)
  return str(out)


@pytest.mark.parametrize("case", list(SPACING))
def test_pixel_spacing_and_its_source(case, base, tmp_path):
  attrs, mm, source = SPACING[case]
  rad = dicom_io.read_radiograph(_with(base[0], tmp_path / "s.dcm", attrs))
  assert rad.spacing_source == source and source in dicom_io.SPACING_SOURCES
  np.testing.assert_allclose(rad.pixel_spacing, mm, rtol=1e-6)
  np.testing.assert_array_equal(rad.image, base[1].image)  # the image is unaffected


def test_non_numeric_spacing_is_unknown(base, tmp_path):
  """Text where numbers belong (written raw: pydicom refuses to write it)."""
  path = _with(base[0], tmp_path / "s.dcm", dict(ImagerPixelSpacing=None))
  raw = open(path, "rb").read()
  tag = b"\x28\x00\x30\x00DS"  # PixelSpacing, explicit VR little endian
  at = raw.index(tag)
  length = int.from_bytes(raw[at + 6:at + 8], "little")
  text = b"abc\\def".ljust(length, b" ")[:length]
  with open(path, "wb") as f:
    f.write(raw[:at + 8] + text + raw[at + 8 + length:])
  rad = dicom_io.read_radiograph(path)
  assert np.isnan(rad.pixel_spacing) and rad.spacing_source == "unknown"


def test_spacing_estimated_from_landmarks_matches_the_cohort(cohort_dir):
  """THORAX_WIDTH_MM against the synthetic cohort's landmarks and the spacing
  its DICOMs state: the estimate is right on average and within 25% each."""
  marks = pd.read_csv(cohort_dir / "landmarks.csv")
  ratios = []
  for _, row in marks.iterrows():
    lm = row.iloc[1:1 + 2 * rois.NUM_LANDMARKS].to_numpy(float).reshape(-1, 2)
    ds = pydicom.dcmread(cohort_dir / "dicom" / row.image, stop_before_pixels=True)
    ratios.append(landmark_checks.estimate_spacing(lm) / float(ds.PixelSpacing[0]))
  ratios = np.array(ratios)
  assert abs(np.median(ratios) - 1) < 0.08, np.median(ratios)
  assert np.all(np.abs(ratios - 1) < 0.25), ratios


def test_estimate_spacing_by_hand():
  lm = np.zeros((rois.NUM_LANDMARKS, 2))
  lm[6:10, 0], lm[10:14, 0] = 100.0, 100.0 + 530.0  # thorax 530 px wide at every level
  assert landmark_checks.estimate_spacing(lm) == pytest.approx(
      landmark_checks.THORAX_WIDTH_MM / 530.0)
  assert np.isnan(landmark_checks.estimate_spacing(np.full((16, 2), np.nan)))
  assert np.isnan(landmark_checks.estimate_spacing(np.zeros((16, 2))))


def test_process_study_fills_and_reports_the_spacing(cohort_dir, tmp_path):
  """Header spacing is kept with its source; a film without one gets the
  estimate from its landmarks, marked "estimated"."""
  marks = pd.read_csv(cohort_dir / "landmarks.csv")
  row = marks.iloc[0]
  lm = row.iloc[1:33].to_numpy(float).reshape(16, 2)
  path = str(cohort_dir / "dicom" / row.image)
  spec = build.CropSpec(size=16, grids=())
  stated = build.process_study(path, lm, spec)
  ds = pydicom.dcmread(path, stop_before_pixels=True)
  assert stated["spacing_source"] == "PixelSpacing"
  assert stated["pixel_spacing"] == np.float32(float(ds.PixelSpacing[0]))
  zero = _with(path, tmp_path / "zero.dcm", dict(PixelSpacing=["0.000", "0.000"],
                                                  ImagerPixelSpacing=None))
  rad = dicom_io.read_radiograph(zero)
  estimated = build.process_study(zero, lm, spec, radiograph=rad)
  # The estimate goes to the record only: the radiograph the landmark checks see
  # keeps NaN, so the thorax-width check in mm is skipped, never made circular.
  assert np.isnan(rad.pixel_spacing) and rad.spacing_source == "unknown"
  assert landmark_checks.check_landmarks(lm, rad.image.shape, None, rad.pixel_spacing) == []
  assert estimated["spacing_source"] == "estimated"
  assert estimated["pixel_spacing"] == np.float32(landmark_checks.estimate_spacing(lm))
  np.testing.assert_array_equal(estimated["rois"], stated["rois"])
