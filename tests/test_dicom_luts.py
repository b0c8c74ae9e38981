"""The grayscale pipeline of the reader against PS3.3 C.11 written out here in
float64 numpy: Modality LUT (C.11.1), VOI LUT windows and sequences (C.11.2),
polarity (MONOCHROME1, C.7.6.3.1.2; Presentation LUT Shape, C.11.6 and the DX
module). pydicom's apply_* functions are never called here: the expected
values come from the formulas alone.

The reader's output range is its own choice (the standard leaves the window's
output range to the implementation, and normalisation follows), so a result
must equal the expected values up to an increasing linear map: a decreasing one
is the wrong polarity, a non-linear one a LUT applied wrongly or not at all.
"""

import numpy as np
import pydicom
import pytest

from data_prep import dicom_io
from tests import faults

BITS = 12


def _stored(h=48, w=64) -> np.ndarray:
  """Every 12-bit value from 0 to 4095 (a ramp), so clipping at both ends of a
  window and every LUT entry show."""
  return np.round(np.linspace(0, 2 ** BITS - 1, h * w)).reshape(h, w).astype(np.uint16)


def _write(tmp_path, stored, photometric="MONOCHROME2", name="lut.dcm", **attrs) -> str:
  """A DX with these stored pixels and header attributes (None deletes one)."""
  path = faults.write_base(tmp_path / name)
  ds = pydicom.dcmread(path)
  faults._plain(ds)  # no rescale, no window unless `attrs` set them
  ds.set_pixel_data(stored, photometric, BITS, generate_instance_uid=False)
  for key in ("PixelIntensityRelationshipSign", "PixelIntensityRelationship"):
    delattr(ds, key)
  faults._set(**attrs)(ds)
  ds.save_as(path, enforce_file_format=True)
  return str(path)


def _lut_item(first: int, data: np.ndarray, **extra) -> pydicom.Dataset:
  item = pydicom.Dataset()
  item.LUTDescriptor = [len(data), first, 16]
  item.LUTData = np.asarray(data, "<u2").tobytes()
  for key, value in extra.items():
    setattr(item, key, value)
  return item


def _lookup(x, first, data):
  """C.11.1 / C.11.2.1.1: below the first mapped value the first entry, above
  the last the last entry."""
  index = np.clip(np.asarray(x, np.float64) - first, 0, len(data) - 1).astype(np.int64)
  return np.asarray(data, np.float64)[index]


def _linear(x, c, w):
  """C.11.2.1.2.1 LINEAR, output range [0, 1]."""
  x = np.asarray(x, np.float64)
  y = ((x - (c - 0.5)) / (w - 1) + 0.5)
  y = np.where(x <= c - 0.5 - (w - 1) / 2, 0.0, y)
  return np.where(x > c - 0.5 + (w - 1) / 2, 1.0, y)


def _linear_exact(x, c, w):
  """C.11.2.1.3.2 LINEAR_EXACT, output range [0, 1]."""
  x = np.asarray(x, np.float64)
  y = (x - c) / w + 0.5
  y = np.where(x <= c - w / 2, 0.0, y)
  return np.where(x > c + w / 2, 1.0, y)


def _sigmoid(x, c, w):
  """C.11.2.1.3.1 SIGMOID, output range [0, 1]."""
  return 1.0 / (1.0 + np.exp(-4.0 * (np.asarray(x, np.float64) - c) / w))


def assert_increasing_linear(actual, expected):
  """actual = a * expected + b with a > 0, to float32 precision."""
  actual = np.asarray(actual, np.float64).ravel()
  expected = np.asarray(expected, np.float64).ravel()
  assert np.ptp(expected) > 0 and np.ptp(actual) > 0
  a, b = np.polyfit(expected, actual, 1)
  residual = np.abs(actual - (a * expected + b)).max() / np.ptp(actual)
  assert a > 0, "wrong polarity: the result decreases where the display brightens"
  assert residual < 1e-4, f"not the expected LUT: residual {residual:.3g} of the range"


def _polarity(photometric):
  return -1.0 if photometric == "MONOCHROME1" else 1.0


# Rescale 0.5 / -1024 turns stored 0..4095 into -1024..1023.5; the windows
# below are in those units and cover about half of them, so both ends clip.
RESCALE = dict(RescaleSlope=0.5, RescaleIntercept=-1024, RescaleType="US")
WINDOWS = {
    "LINEAR": (_linear, 100.0, 801.0),
    "LINEAR_EXACT": (_linear_exact, 100.0, 800.0),
    "SIGMOID": (_sigmoid, -50.0, 300.0),
}


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
@pytest.mark.parametrize("function", list(WINDOWS))
def test_window_narrower_than_the_data(function, photometric, tmp_path):
  formula, c, w = WINDOWS[function]
  stored = _stored()
  path = _write(tmp_path, stored, photometric, WindowCenter=c, WindowWidth=w,
                VOILUTFunction=function, **RESCALE)
  modality = stored * 0.5 - 1024.0
  expected = _polarity(photometric) * formula(modality, c, w)
  # The window matters: over a third of the pixels clip (or nearly, for SIGMOID).
  assert np.mean(np.abs(formula(modality, c, w) - 0.5) > 0.49) > 0.3
  assert_increasing_linear(dicom_io.read_display_values(path), expected)


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_window_without_function_is_linear(photometric, tmp_path):
  """VOI LUT Function absent: LINEAR (C.11.2.1.2)."""
  stored = _stored()
  path = _write(tmp_path, stored, photometric, WindowCenter=1500, WindowWidth=1000)
  expected = _polarity(photometric) * _linear(stored, 1500, 1000)
  assert_increasing_linear(dicom_io.read_display_values(path), expected)


def _gamma_lut(n=1024, gamma=0.4):
  return np.round(65535 * (np.arange(n) / (n - 1)) ** gamma)


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_voi_lut_sequence(photometric, tmp_path):
  """A gamma-shaped VOI LUT over part of the range (first mapped value 1000,
  1024 entries), after a rescale with a non-zero intercept."""
  stored = _stored()
  data = _gamma_lut()
  path = _write(tmp_path, stored, photometric, RescaleSlope=1, RescaleIntercept=-500,
                VOILUTSequence=[_lut_item(1000, data, LUTExplanation="gamma 0.4")])
  expected = _polarity(photometric) * _lookup(stored - 500.0, 1000, data)
  assert_increasing_linear(dicom_io.read_display_values(path), expected)


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_modality_lut_sequence(photometric, tmp_path):
  """A non-linear Modality LUT (square root) starting at stored value 300."""
  stored = _stored()
  data = np.round(np.sqrt(np.arange(3000) / 2999) * 60000)
  path = _write(tmp_path, stored, photometric,
                ModalityLUTSequence=[_lut_item(300, data, ModalityLUTType="US")])
  expected = _polarity(photometric) * _lookup(stored, 300, data)
  assert_increasing_linear(dicom_io.read_display_values(path), expected)


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_modality_lut_sequence_then_window(photometric, tmp_path):
  """The window applies to the Modality LUT's output, not to stored values."""
  stored = _stored()
  data = np.round(np.sqrt(np.arange(4096) / 4095) * 4000)
  path = _write(tmp_path, stored, photometric, WindowCenter=3000, WindowWidth=1001,
                ModalityLUTSequence=[_lut_item(0, data, ModalityLUTType="US")])
  expected = _polarity(photometric) * _linear(_lookup(stored, 0, data), 3000, 1001)
  assert_increasing_linear(dicom_io.read_display_values(path), expected)


# ----------------------------------------------------------------- polarity

# (photometric, Presentation LUT Shape, Pixel Intensity Relationship Sign) ->
# the sign of the display values against the stored ones.
POLARITY = {
    ("MONOCHROME2", None, None): +1,
    ("MONOCHROME1", None, None): -1,
    ("MONOCHROME2", "IDENTITY", None): +1,
    ("MONOCHROME2", "INVERSE", None): -1,     # flips polarity
    ("MONOCHROME1", "INVERSE", None): -1,     # DX: INVERSE goes with MONOCHROME1, once
    ("MONOCHROME1", "IDENTITY", 1): -1,       # contradiction settled by the sign: bone low
    ("MONOCHROME1", "IDENTITY", -1): +1,      # ... bone high
    ("MONOCHROME2", "INVERSE", -1): -1,       # INVERSE is explicit: the sign is not asked
    ("MONOCHROME1", "inverse ", None): -1,    # case and padding as some writers do
}


@pytest.mark.parametrize("photometric,shape,sign", list(POLARITY),
                         ids=["-".join(map(str, k)) for k in POLARITY])
def test_presentation_lut_shape(photometric, shape, sign, tmp_path):
  stored = _stored()
  attrs = {"PresentationLUTShape": shape} if shape else {}
  if sign is not None:
    attrs["PixelIntensityRelationshipSign"] = sign
  path = _write(tmp_path, stored, photometric, **attrs)
  expected = POLARITY[(photometric, shape, sign)] * stored.astype(np.float64)
  assert_increasing_linear(dicom_io.read_display_values(path), expected)


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_inverse_with_a_window(photometric, tmp_path):
  """INVERSE acts on the VOI output: the window is not mirrored."""
  stored = _stored()
  path = _write(tmp_path, stored, photometric, WindowCenter=1000, WindowWidth=1001,
                PresentationLUTShape="INVERSE")
  assert_increasing_linear(dicom_io.read_display_values(path),
                           -_linear(stored, 1000, 1001))


def test_inverse_gives_bone_bright_image(tmp_path):
  """A film stored bone dark with MONOCHROME2 + INVERSE reads as the bone-bright
  original, through read_radiograph."""
  image = faults.anatomy()
  stored = np.round((1 - image) * 4095).astype(np.uint16)
  plain = _write(tmp_path, stored, name="plain.dcm")
  inverse = _write(tmp_path, stored, name="inverse.dcm", PresentationLUTShape="INVERSE")
  rib, lung = (42, 40), (30, 20)  # faults.anatomy: a rib crosses the lung at row ~42
  assert image[rib] > image[lung] + 0.2
  bright = dicom_io.read_radiograph(inverse).image
  assert bright[rib] > bright[lung] + 0.2
  assert np.corrcoef(bright.ravel(), image.ravel())[0, 1] > 0.99
  dark = dicom_io.read_radiograph(plain).image  # without the shape: as stored
  assert dark[rib] < dark[lung] - 0.2


@pytest.mark.parametrize("photometric,shape,reason", [
    ("MONOCHROME1", "IDENTITY", "MONOCHROME1 with Presentation LUT Shape IDENTITY "
     "contradict each other"),
    ("MONOCHROME2", "LIN OD", "Presentation LUT Shape LIN OD is neither IDENTITY nor "
     "INVERSE")])
def test_unknown_polarity_is_refused(photometric, shape, reason, tmp_path):
  """Noise has no mediastinum and no lungs: nothing settles the contradiction."""
  noise = np.random.default_rng(0).integers(0, 2 ** BITS, (256, 256)).astype(np.uint16)
  path = _write(tmp_path, noise, photometric, PresentationLUTShape=shape)
  with pytest.raises(dicom_io.StudyError) as e:
    dicom_io.read_radiograph(path)
  assert e.value.path == path and reason in e.value.reason


def test_read_radiograph_normalises_the_display_values(tmp_path):
  path = _write(tmp_path, _stored(), "MONOCHROME1", WindowCenter=1000, WindowWidth=1001,
                VOILUTFunction="SIGMOID")
  np.testing.assert_array_equal(
      dicom_io.read_radiograph(path).image,
      dicom_io.normalise(dicom_io.read_display_values(path)))


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
@pytest.mark.parametrize("falling", [False, True])
def test_presentation_lut_sequence_direction(photometric, falling, tmp_path):
  """A Presentation LUT Sequence instead of the shape: a falling one inverts
  (as INVERSE), a rising one is IDENTITY (contradictory with MONOCHROME1, here
  settled by the sign +1: inverted)."""
  stored = _stored()
  data = np.linspace(0, 65535, 4096).round()
  attrs = {"PresentationLUTSequence": [_lut_item(0, data[::-1] if falling else data)]}
  if photometric == "MONOCHROME1" and not falling:
    attrs["PixelIntensityRelationshipSign"] = 1
  path = _write(tmp_path, stored, photometric, **attrs)
  sign = -1 if falling or photometric == "MONOCHROME1" else 1
  assert_increasing_linear(dicom_io.read_display_values(path), sign * stored.astype(float))


def test_non_monotonic_presentation_lut_is_refused(tmp_path):
  data = np.abs(np.linspace(-65535, 65535, 4096)).round()  # a V: polarity unknown
  path = _write(tmp_path, _stored(), PresentationLUTSequence=[_lut_item(0, data)])
  with pytest.raises(dicom_io.StudyError, match="Presentation LUT Sequence is empty, flat "
                     "or not monotonic"):
    dicom_io.read_radiograph(path)


@pytest.mark.parametrize("bone_bright_stored", [False, True])
def test_contradictory_header_follows_the_anatomy(bone_bright_stored, tmp_path):
  """MONOCHROME1 + IDENTITY without a Pixel Intensity Relationship Sign (written by
  some CR readers): whichever way the pixels are stored, the film reads bone
  bright, decided by its mediastinum being brighter than its lungs."""
  image = faults.anatomy()
  stored = np.round((image if bone_bright_stored else 1 - image) * 4095).astype(np.uint16)
  path = _write(tmp_path, stored, "MONOCHROME1", PresentationLUTShape="IDENTITY")
  bright = dicom_io.read_radiograph(path).image
  assert np.corrcoef(bright.ravel(), image.ravel())[0, 1] > 0.99


def test_chest_polarity_on_simulated_films(cohort_dir):
  """The anatomical polarity check reads every simulated film (PA and AP, CR and
  DX processing, markers, collimation) as bone bright, and its negative as bone
  dark."""
  paths = sorted((cohort_dir / "dicom").glob("*.dcm"))
  for path in paths:
    values = dicom_io.read_display_values(path)
    assert dicom_io.chest_polarity(values) == 1, path
    assert dicom_io.chest_polarity(-values) == -1, path
