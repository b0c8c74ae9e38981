"""DICOM round trips through data_prep.synthesize.write_dicom and dicom_io."""

import numpy as np
import pydicom
import pytest

from data_prep import dicom_io
from data_prep.synthesize import write_dicom


def _anatomy(h=96, w=80):
  """A bone-bright toy image: dark lungs, a brighter mediastinum, a 'rib'."""
  y, x = np.mgrid[0:h, 0:w].astype(np.float32)
  img = 0.6 + 0.2 * np.sin(x / 9.0) * np.cos(y / 13.0)
  img[20:70, 10:30] = 0.25  # lung
  img[20:70, 50:70] = 0.3   # lung
  img[40:46, 5:75] += 0.3   # rib across both lungs
  return np.clip(img, 0, 1)


@pytest.mark.parametrize("bits,rescale", [(12, (1.0, 0.0)), (16, (0.5, -1024.0))])
def test_round_trip_both_photometric(tmp_path, bits, rescale):
  img = _anatomy()
  out = {}
  for photometric in ("MONOCHROME1", "MONOCHROME2"):
    path = tmp_path / f"{photometric}.dcm"
    write_dicom(path, img, photometric=photometric, spacing=0.175, bits_stored=bits,
                modality="CR", view="PA", rescale=rescale)
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == photometric
    assert ds.BitsStored == bits and ds.BitsAllocated == 16 and ds.PixelRepresentation == 0
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    stored = ds.pixel_array.astype(np.float64)
    rib, lung = stored[42, 20], stored[30, 20]
    # MONOCHROME1 stores bone dark, MONOCHROME2 bone bright.
    assert (rib < lung) if photometric == "MONOCHROME1" else (rib > lung)
    rad = dicom_io.read_radiograph(path)
    assert rad.photometric == photometric and rad.modality == "CR"
    assert rad.bits_stored == bits
    assert rad.pixel_spacing == pytest.approx(0.175)
    assert rad.image.shape == img.shape and rad.image.dtype == np.float32
    assert 0.0 <= rad.image.min() and rad.image.max() <= 1.0
    assert rad.image[42, 20] > rad.image[30, 20] + 0.2  # bone bright
    out[photometric] = rad.image
  a, b = out["MONOCHROME1"].ravel(), out["MONOCHROME2"].ravel()
  assert np.corrcoef(a, b)[0, 1] > 0.99
  # normalise clips at percentiles of the non-extreme pixels; this toy image has
  # many saturated ones, so it is a little less than linear in it.
  assert np.corrcoef(a, img.ravel())[0, 1] > 0.98


def test_header_is_written(tmp_path):
  path = tmp_path / "h.dcm"
  write_dicom(path, _anatomy(), spacing=0.2, header=dict(PatientName="DOE^JANE",
                                                         PatientID="MRN123"))
  ds = pydicom.dcmread(path)
  assert str(ds.PatientName) == "DOE^JANE" and ds.PatientID == "MRN123"
  assert [float(v) for v in ds.ImagerPixelSpacing] == [0.2, 0.2]
  assert "WindowCenter" in ds and "WindowWidth" in ds
  assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


def test_not_dicom(tmp_path):
  path = tmp_path / "notes.dcm"
  path.write_text("this is not a DICOM file\n")
  with pytest.raises(dicom_io.StudyError, match="not a readable DICOM") as e:
    dicom_io.read_radiograph(path)
  assert e.value.path == str(path) and str(path) in str(e.value)


def test_missing_file(tmp_path):
  path = tmp_path / "absent.dcm"
  with pytest.raises(dicom_io.StudyError, match="file not found") as e:
    dicom_io.read_radiograph(path)
  assert str(path) in str(e.value)


def test_ct_modality_rejected(tmp_path):
  path = tmp_path / "ct.dcm"
  write_dicom(path, _anatomy(), modality="CT")
  with pytest.raises(dicom_io.StudyError, match="modality CT is not a radiograph") as e:
    dicom_io.read_radiograph(path)
  assert str(path) in str(e.value)


def test_lateral_view_rejected(tmp_path):
  path = tmp_path / "lat.dcm"
  write_dicom(path, _anatomy(), view="LL")
  with pytest.raises(dicom_io.StudyError, match="not frontal") as e:
    dicom_io.read_radiograph(path)
  assert str(path) in str(e.value)


def test_constant_image_rejected(tmp_path):
  path = tmp_path / "flat.dcm"
  write_dicom(path, np.full((32, 32), 0.5))
  with pytest.raises(dicom_io.StudyError, match="no contrast") as e:
    dicom_io.read_radiograph(path)
  assert str(path) in str(e.value)
