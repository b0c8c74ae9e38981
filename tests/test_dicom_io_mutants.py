"""The DICOM reader's edges that the mutation run of data_prep/dicom_io.py
(docs/mutation.md) showed unguarded: exact refusal messages (as docs/faults.md
promises them), the boundaries of every threshold, the Presentation LUT
Sequence's direction, the polarity rule with a rescale, the SOP class check,
the anatomical polarity check and the normalisation's percentile basis.

Expected values are written by hand or computed here in float64 numpy; files
are small and written with pydicom.
"""

import os
import pathlib
import re

import numpy as np
import pydicom
from pydicom import uid as uids
from pydicom.pixels import get_decoder
import pytest

from data_prep import dicom_io
from tests import faults
from tests.test_dicom_luts import _lut_item, _stored, _write, assert_increasing_linear

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs" / "faults.md"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
  return faults.write_base(tmp_path_factory.mktemp("mutants") / "base.dcm")


def _edit(base, path, fn) -> str:
  ds = pydicom.dcmread(base)
  fn(ds)
  ds.save_as(path, enforce_file_format=True)
  return str(path)


def _refused(path) -> str:
  with pytest.raises(dicom_io.StudyError) as e:
    dicom_io.read_radiograph(path)
  assert e.value.path == os.fspath(path) and str(e.value) == f"{path}: {e.value.reason}"
  return e.value.reason


# ----------------------------------------------------------------- messages


def _doc_outcomes() -> dict:
  rows = {}
  for line in DOCS.read_text().splitlines():
    cells = re.split(r"(?<!\\) \| ", line.strip().strip("|").strip())
    if line.startswith("| ") and len(cells) == 3 and cells[0] != "fault":
      rows.setdefault(cells[0], cells[2].replace("\\|", "|"))
  return rows


def test_docs_faults_table_is_what_the_reader_says(tmp_path):
  """Every row of docs/faults.md whose outcome does not depend on the installed
  decoders, word for word: the refusal a user reads is the one documented."""
  doc = _doc_outcomes()
  base = faults.write_base(tmp_path / "base.dcm")
  checked = 0
  for i, fault in enumerate(faults.FAULTS):
    if callable(fault.expect):
      continue
    path = faults.make(fault, base, str(tmp_path / f"f{i:02d}.dcm"))
    got = faults.outcome(path).replace(path + ": ", "")
    assert doc[fault.name] == got, fault.name
    checked += 1
  assert checked > 50


def test_describe_cuts_long_messages_and_keeps_the_type():
  assert dicom_io._describe(ValueError("a\n   b\tc")) == "ValueError: a b c"
  assert dicom_io._describe(KeyError()) == "KeyError"
  exact = "x" * 160
  assert dicom_io._describe(OSError(exact)) == f"OSError: {exact}"
  assert dicom_io._describe(OSError(exact + "y")) == f"OSError: {exact}..."
  assert dicom_io._describe(OSError("z" * 300), limit=10) == "OSError: zzzzzzzzzz..."


def test_size_limit_message_and_boundary(base, tmp_path, monkeypatch):
  """A sparse 1.5 GiB file is refused before it is read; a file of exactly
  MAX_FILE_BYTES is read."""
  big = tmp_path / "big.dcm"
  with open(big, "wb") as f:
    f.truncate(3 << 29)
  assert _refused(big) == ("file is 1.5 GiB, over the 1 GiB limit for one radiograph; "
                           "check that it is a single chest X-ray")
  monkeypatch.setattr(dicom_io, "MAX_FILE_BYTES", os.path.getsize(base))
  dicom_io.read_radiograph(base)


def test_file_errors_word_for_word(base, tmp_path, monkeypatch):
  assert _refused(tmp_path / "absent.dcm") == "file not found"
  for error, reason in [
      (PermissionError(13, "Permission denied"),
       "file cannot be opened: permission denied; give this user read access"),
      (OSError(5, "Input/output error"),
       "file cannot be read (OSError: [Errno 5] Input/output error); check the disk or "
       "network share")]:
    def refuse(*args, _e=error, **kwargs):
      raise _e
    monkeypatch.setattr(dicom_io, "open", refuse, raising=False)
    assert _refused(base) == reason
  monkeypatch.undo()
  monkeypatch.setattr(dicom_io, "normalise", lambda v: (_ for _ in ()).throw(MemoryError()))
  assert _refused(base) == "out of memory while reading the image; use fewer workers"


@pytest.mark.parametrize("data,reason", [
    (bytes(132), "not a readable DICOM file: no 'DICM' marker at byte 128; only DICOM "
     "files can be used"),
    (b"a" * 512 + b"\x00" * 20, "not a readable DICOM file: it holds text; only DICOM "
     "files can be used"),
    (b"a" * 131, "not a readable DICOM file: only 131 bytes, too short for DICOM "
     "(truncated?); copy or export it from the archive again")],
    ids=["132 zero bytes", "text, then binary after byte 512", "131 bytes"])
def test_not_dicom_boundaries(data, reason, tmp_path):
  path = tmp_path / "x.dcm"
  path.write_bytes(data)
  assert _refused(path) == reason


def test_unparseable_header_names_pydicoms_error(tmp_path):
  """File Meta saying Deflated Explicit VR, then bytes that do not inflate."""
  ts = uids.DeflatedExplicitVRLittleEndian.encode()
  element = b"\x02\x00\x10\x00UI" + len(ts).to_bytes(2, "little") + ts
  group = b"\x02\x00\x00\x00UL\x04\x00" + len(element).to_bytes(4, "little")
  path = tmp_path / "x.dcm"
  path.write_bytes(bytes(128) + b"DICM" + group + element + b"\xff" * 200)
  with pytest.raises(Exception) as e:  # what the reader must quote
    pydicom.dcmread(str(path))
  assert _refused(path) == (f"not a readable DICOM file: header cannot be parsed "
                            f"({type(e.value).__name__}: {e.value}); copy or export it "
                            "from the archive again")


def _raw(base, path, **attrs) -> str:
  """The base as a raw dataset (no preamble, no File Meta), edited."""
  ds = pydicom.dcmread(base)
  faults._set(**attrs)(ds)
  faults._raw_dataset(ds, b"", str(path))
  return str(path)


def test_raw_dataset_checks(base, tmp_path):
  """A raw dataset is accepted on its image elements: Rows alone or PixelData
  alone gets the specific refusal; neither SOP Class nor File Meta is needed."""
  assert _refused(_raw(base, tmp_path / "a.dcm", PixelData=None)) == (
      "no pixel data in the file (a report or a structured document?); only images can "
      "be used")
  assert _refused(_raw(base, tmp_path / "b.dcm", Rows=None)) == (
      "header lacks Rows, needed to read the pixel data; copy or export it from the "
      "archive again")
  rad = dicom_io.read_radiograph(_raw(base, tmp_path / "c.dcm", SOPClassUID=None,
                                      NumberOfFrames=None, Modality=None))
  assert rad.modality == "" and rad.image.shape == faults.anatomy().shape


def test_raw_dataset_starting_with_file_meta_group(base, tmp_path):
  """No preamble but a File Meta group (0002,xxxx) first: read."""
  ds = pydicom.dcmread(base)
  path = str(tmp_path / "m.dcm")
  ds.save_as(path, enforce_file_format=True)
  raw = open(path, "rb").read()
  assert raw[128:132] == b"DICM" and raw[132:134] == b"\x02\x00"
  with open(path, "wb") as f:
    f.write(raw[132:])
  assert dicom_io.read_radiograph(path).image.shape == faults.anatomy().shape


def test_compressed_without_transfer_syntax(base, tmp_path):
  ds = pydicom.dcmread(base)
  faults._encapsulated(ds, uids.RLELossless, faults._fake_stream(b"\x00"))
  del ds.file_meta.TransferSyntaxUID
  path = str(tmp_path / "c.dcm")
  ds.save_as(path, enforce_file_format=False, implicit_vr=False, little_endian=True)
  assert _refused(path) == ("compressed pixel data but no transfer syntax in the file meta, "
                            "so the codec is unknown; re-export the file")


# ----------------------------------------------------------------- header checks


@pytest.mark.parametrize("dataset_class,meta_class,refused", [
    (uids.DigitalXRayImageStorageForProcessing, uids.DigitalXRayImageStorageForPresentation,
     True),
    (None, uids.DigitalXRayImageStorageForProcessing, True),
    (None, uids.DigitalXRayImageStorageForPresentation, False)],
    ids=["dataset says raw", "only the File Meta says raw", "only the File Meta, fine"])
def test_for_processing_sop_class_from_dataset_then_file_meta(
    dataset_class, meta_class, refused, base, tmp_path):
  """The dataset's SOP Class UID decides; without one, the File Meta's."""
  def edit(ds):
    ds.PresentationIntentType = "FOR PRESENTATION"
    faults._set(SOPClassUID=dataset_class)(ds)
    ds.file_meta.MediaStorageSOPClassUID = meta_class
  path = str(tmp_path / "s.dcm")
  ds = pydicom.dcmread(base)
  edit(ds)
  ds.save_as(path, enforce_file_format=False)
  if refused:
    assert _refused(path).startswith("a FOR PROCESSING image (raw detector data")
  else:
    dicom_io.read_radiograph(path)


@pytest.mark.parametrize("attrs,reason", [
    (dict(Rows=0), "image is 0 x 80 pixels: empty"),
    (dict(Columns=0), "image is 96 x 0 pixels: empty"),
    (dict(Rows=None, Columns=None), "header lacks Rows, Columns, needed to read the pixel "
     "data; copy or export it from the archive again")])
def test_empty_or_missing_size(attrs, reason, base, tmp_path):
  assert _refused(_edit(base, tmp_path / "s.dcm", faults._set(**attrs))) == reason


@pytest.mark.parametrize("frames", [None, ""], ids=["absent", "empty"])
def test_number_of_frames_absent_or_empty_is_one_frame(frames, base, tmp_path):
  def edit(ds):
    if frames is None:
      faults._set(NumberOfFrames=None)(ds)
    else:
      ds.NumberOfFrames = frames
  path = _edit(base, tmp_path / "s.dcm", edit)
  assert not pydicom.dcmread(path).get("NumberOfFrames")
  dicom_io.read_radiograph(path)


def test_bits_stored_absent_reaches_the_decoder(base, tmp_path):
  """Without BitsStored the header check uses BitsAllocated; pydicom then names
  the missing element."""
  reason = _refused(_edit(base, tmp_path / "s.dcm", faults._set(BitsStored=None)))
  assert reason.startswith("pixel data cannot be read (") and "Bits Stored" in reason


# ----------------------------------------------------------------- pixel values


def _rgb(tmp_path, spread: float) -> str:
  """Grey 100..200 as RGB with the channels spread +-`spread` about it."""
  grey = faults.anatomy() * 100 + 100
  rgb = np.stack([grey + spread, grey, grey - spread], -1).round().astype(np.uint8)
  path = faults.write_base(tmp_path / f"rgb{spread}.dcm")
  ds = pydicom.dcmread(path)
  faults._plain(ds)
  ds.set_pixel_data(rgb, "RGB", 8, generate_instance_uid=False)
  ds.save_as(path, enforce_file_format=True)
  return str(path)


def test_grey_as_rgb_tolerance_is_two_levels(tmp_path):
  """Channels within 2 of their mean are grey (JPEG'd secondary captures);
  beyond, colour."""
  dicom_io.read_radiograph(_rgb(tmp_path, 2))
  assert _refused(_rgb(tmp_path, 3)).startswith("colour image (RGB) with real colour content")


def test_rescale_overflow_is_refused(tmp_path):
  path = _write(tmp_path, _stored(), RescaleSlope="1e308", RescaleIntercept=0)
  assert _refused(path) == ("pixel values are not finite after the modality LUT "
                            "(RescaleSlope/Intercept broken?)")


def test_normalise_basis_and_dtype():
  """Percentiles of the pixels strictly between the extremes when they are at
  least half of the image, else of all pixels (np.percentile, float64)."""
  rng = np.random.default_rng(0)
  inner = rng.uniform(10, 20, 600)
  for n_extreme, use_inner in [(500, True), (501, False), (100, True)]:
    pixels = np.concatenate([inner[:1000 - n_extreme], np.zeros(n_extreme // 2),
                             np.full(n_extreme - n_extreme // 2, 30.0)]).astype(np.float32)
    basis = pixels[(pixels > 0) & (pixels < 30)] if use_inner else pixels
    lo, hi = np.percentile(basis.astype(np.float64), [0.5, 99.5])
    expected = np.clip((pixels.astype(np.float64) - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(dicom_io.normalise(pixels), expected, atol=1e-5)
  out = dicom_io.normalise(np.arange(100, dtype=np.uint16).reshape(10, 10))
  assert out.dtype == np.float32


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_normalise_refuses_infinite_percentiles():
  pixels = np.concatenate([np.full(60, -np.inf), np.arange(40.0)]).astype(np.float32)
  with pytest.raises(ValueError, match="no contrast"):
    dicom_io.normalise(pixels)


# ----------------------------------------------------------------- pixel spacing


@pytest.mark.parametrize("attrs,mm,source", [
    (dict(PixelSpacing=["0.02", "0.02"]), 0.02, "PixelSpacing"),
    (dict(PixelSpacing=["2.0", "2.0"]), 2.0, "PixelSpacing"),
    (dict(PixelSpacing="0.2"), 0.2, "PixelSpacing"),
    (dict(PixelSpacing=None, ImagerPixelSpacing=[0.15, 0.15],
          EstimatedRadiographicMagnificationFactor=1.0), 0.15,
     "ImagerPixelSpacing/magnification"),
    (dict(PixelSpacing=None, ImagerPixelSpacing=[0.15, 0.15],
          EstimatedRadiographicMagnificationFactor=3.0), 0.05,
     "ImagerPixelSpacing/magnification"),
    (dict(PixelSpacing=None, ImagerPixelSpacing=[0.15, 0.15],
          EstimatedRadiographicMagnificationFactor=3.5), 0.15, "ImagerPixelSpacing")],
    ids=["0.02 (lowest)", "2.0 (highest)", "one value", "magnification 1",
         "magnification 3", "magnification 3.5"])
def test_spacing_range_ends_are_included(attrs, mm, source, base, tmp_path):
  rad = dicom_io.read_radiograph(_edit(base, tmp_path / "s.dcm", faults._set(**attrs)))
  assert rad.spacing_source == source
  np.testing.assert_allclose(rad.pixel_spacing, mm, rtol=1e-12)


# ----------------------------------------------------------------- polarity


def _lut_ds(data) -> pydicom.Dataset:
  ds = pydicom.Dataset()
  ds.PresentationLUTSequence = [_lut_item(0, np.asarray(data))]
  return ds


@pytest.mark.parametrize("data,direction", [
    ([0, 65535], "IDENTITY"), ([65535, 0], "INVERSE"),
    ([0, 0, 100, 200], "IDENTITY"), ([0, 100, 200, 200], "IDENTITY"),
    ([200, 200, 100, 0], "INVERSE"), ([200, 100, 0, 0], "INVERSE"),
    ([0, 100, 50, 300], None), ([300, 100, 150, 0], None),   # overall up / down, not monotonic
    ([100, 50, 51, 0], None), ([500, 500, 500], None), ([500], None), ([], None)],
    ids=lambda v: str(v))
def test_presentation_lut_sequence_direction_by_hand(data, direction):
  ds = _lut_ds(data)
  if direction:
    assert dicom_io._presentation_lut_direction("p.dcm", ds) == direction
    return
  with pytest.raises(dicom_io.StudyError) as e:
    dicom_io._presentation_lut_direction("p.dcm", ds)
  assert e.value.path == "p.dcm" and e.value.reason == (
      "the Presentation LUT Sequence is empty, flat or not monotonic, so the display "
      "polarity is unknown; copy or export it from the archive again")


def test_presentation_lut_data_as_numbers():
  """LUTData read as a list of numbers (US VR) instead of bytes; an item
  without LUTData is refused like an empty one."""
  for data, direction in [([0, 10, 4000], "IDENTITY"), ([4000, 10, 0], "INVERSE")]:
    ds = _lut_ds([0])
    ds.PresentationLUTSequence[0].LUTData = data
    assert dicom_io._presentation_lut_direction("p.dcm", ds) == direction
  ds = _lut_ds([0])
  del ds.PresentationLUTSequence[0].LUTData
  with pytest.raises(dicom_io.StudyError, match="empty, flat or not monotonic"):
    dicom_io._presentation_lut_direction("p.dcm", ds)


def test_non_monotonic_presentation_lut_names_the_file(tmp_path):
  path = _write(tmp_path, _stored(), PresentationLUTSequence=[
      _lut_item(0, np.array([0, 60000, 100, 65535]))])
  assert _refused(path).startswith("the Presentation LUT Sequence is empty, flat")


@pytest.mark.parametrize("attrs,sign", [
    # MONOCHROME1 + IDENTITY, sign +1 (bone stored low): inverted, unless a
    # negative slope turned the stored values round.
    (dict(RescaleSlope=0.5, RescaleIntercept=0), -1),
    (dict(RescaleSlope=-1, RescaleIntercept=4095), -1),
    # A Modality LUT Sequence wins over a (contradictory) RescaleSlope.
    (dict(RescaleSlope=-1, RescaleIntercept=0,
          ModalityLUTSequence=[_lut_item(0, np.arange(4096), ModalityLUTType="US")]), -1)],
    ids=["slope 0.5", "slope -1", "sequence and slope -1"])
def test_relationship_sign_with_a_rescale(attrs, sign, tmp_path):
  """`sign` is that of the display values against the stored ones, by hand:
  slope 0.5 -> inverted (-); slope -1 -> modality values already turned round
  (display = -stored + c, sign -); sequence (increasing) -> inverted (-)."""
  stored = _stored()
  path = _write(tmp_path, stored, "MONOCHROME1", PresentationLUTShape="IDENTITY",
                PixelIntensityRelationshipSign=1, **attrs)
  assert_increasing_linear(dicom_io.read_display_values(path), sign * stored.astype(float))


def test_relationship_sign_minus_one_is_not_second_guessed(tmp_path):
  """Sign -1 (bone stored high) settles MONOCHROME1 + IDENTITY on its own: noise,
  which no anatomy check can read, comes back as stored."""
  noise = np.random.default_rng(0).integers(0, 4096, (256, 256)).astype(np.uint16)
  path = _write(tmp_path, noise, "MONOCHROME1", PresentationLUTShape="IDENTITY",
                PixelIntensityRelationshipSign=-1)
  assert_increasing_linear(dicom_io.read_display_values(path), noise.astype(float))


def test_polarity_refusals_word_for_word(tmp_path):
  noise = np.random.default_rng(0).integers(0, 4096, (256, 256)).astype(np.uint16)
  assert _refused(_write(tmp_path, noise, "MONOCHROME1", name="a.dcm",
                         PresentationLUTShape="IDENTITY")) == (
      "MONOCHROME1 with Presentation LUT Shape IDENTITY contradict each other (PS3.3 "
      "C.8.11.3: IDENTITY goes with MONOCHROME2), no Pixel Intensity Relationship Sign "
      "settles it and the image does not show a chest film's mediastinum brighter or "
      "darker than its lungs, so it is unknown whether bone is bright or dark; fix the "
      "header (MONOCHROME1 + INVERSE, or MONOCHROME2 + IDENTITY) or export the image again")
  assert _refused(_write(tmp_path, noise, name="b.dcm", PresentationLUTShape="LIN OD")) == (
      "Presentation LUT Shape LIN OD is neither IDENTITY nor INVERSE (PS3.3 C.8.11.3, "
      "C.11.6), so the display polarity is unknown; copy or export it from the archive "
      "again")


def _chest(h=100, w=100, lung=0.0, centre=10.0, outer=50.0, top=None):
  """Bands of PS chest geometry (dicom_io.MEDIASTINUM_BAND, LUNG_BANDS): lungs in
  columns 10-42% and 58-90%, mediastinum 42-58%, `outer` outside, a top strip
  of `top` (rows 0-10%) that sets the 99th percentile."""
  v = np.full((h, w), outer)
  v[:, int(.10 * w):int(.42 * w)] = lung
  v[:, int(.58 * w):int(.90 * w)] = lung
  v[:, int(.42 * w):int(.58 * w)] = centre
  if top is not None:
    v[:int(.1 * h)] = top
  return v


def test_chest_polarity_by_hand():
  # Percentiles 1 and 99 are 0 and 100 (the top strip): the bands differ by
  # exactly the margin 0.03 (3 / 100): not enough either way.
  assert dicom_io.chest_polarity(_chest(centre=3.0, top=100.0)) == 0
  assert dicom_io.chest_polarity(_chest(lung=3.0, centre=0.0, outer=3.0, top=100.0)) == 0
  assert dicom_io.chest_polarity(_chest(centre=4.0, top=100.0)) == 1
  assert dicom_io.chest_polarity(_chest(lung=4.0, centre=0.0, outer=4.0, top=100.0)) == -1
  assert dicom_io.chest_polarity(-_chest(centre=4.0, top=100.0)) == -1
  # Far from zero: the contrast is relative to the 1-99% range (10 / 100), not
  # to the values' size.
  assert dicom_io.chest_polarity(1000 + _chest(centre=10.0, top=100.0)) == 1
  # Only the bands count: columns outside them (here as dark as the lungs in
  # 0-10%, bright 90-100%) do not move the mediastinum's median.
  assert dicom_io.chest_polarity(_chest(outer=0.0, top=100.0)) == 1
  assert dicom_io.chest_polarity(np.full((64, 64), 7.0)) == 0
  # A few burned-in marker pixels (under 1%) do not set the contrast scale.
  markers = _chest(centre=10.0, top=100.0)
  markers[50, :5] = 1e4
  assert dicom_io.chest_polarity(markers) == 1


def test_chest_polarity_uses_rows_25_to_75_percent():
  """Mediastinum bright in rows 25-50%, barely above the lungs in 50-75%: its
  median over rows 25-75% is clear; over rows 0-75% (a dark top) it is not."""
  v = _chest(lung=10.0, centre=10.0, outer=10.0)
  h, w = v.shape
  v[int(.25 * h):int(.50 * h), int(.42 * w):int(.58 * w)] = 60.0
  v[int(.50 * h):int(.75 * h), int(.42 * w):int(.58 * w)] = 11.0
  v[:int(.25 * h)] = 0.0
  v[-2:] = 100.0  # the 99th percentile
  assert dicom_io.chest_polarity(v) == 1


# ----------------------------------------------------------------- decoders


def test_plugin_order_puts_unknown_plugins_before_gdcm(monkeypatch):
  decoder = get_decoder(uids.RLELossless)
  monkeypatch.setattr(decoder, "_available", {"foo": None, "gdcm": None, "pydicom": None})
  assert dicom_io._plugins(uids.RLELossless) == ["pydicom", "foo", "gdcm"]
  j2k = get_decoder(uids.JPEG2000)
  monkeypatch.setattr(j2k, "_available", {"gdcm": None, "pillow": None})
  assert dicom_io._plugins(uids.JPEG2000) == ["pillow"]


def test_damaged_stream_names_the_packages(base, tmp_path):
  if not get_decoder(uids.JPEG2000Lossless).is_available:
    pytest.skip("no JPEG 2000 decoder installed")
  path = faults.make(next(f for f in faults.FAULTS if f.name == "damaged JPEG 2000"),
                     base, str(tmp_path / "j.dcm"))
  reason = _refused(path)
  assert reason.startswith("JPEG 2000 Image Compression (Lossless Only) pixel data cannot "
                           "be decoded (")
  assert reason.endswith("may read it: pip install 'bmdjax[dicom-codecs]' (or install "
                         "pylibjpeg + pylibjpeg-openjpeg, or python-gdcm)")
  assert " at 0x" not in reason
  # Each plugin's own words, quoted after its name (pydicom's wrapper removed).
  plugins = dicom_io._plugins(uids.JPEG2000Lossless)
  ds = pydicom.dcmread(path)
  for plugin in plugins:
    ds.pixel_array_options(decoding_plugin=plugin)
    with pytest.raises(Exception) as e:
      ds.pixel_array
    words = re.sub(r" at 0x[0-9a-f]+", "", " ".join(str(e.value).split()))  # addresses
    quoted = reason.split(f"{plugin}: ", 1)[1].split("; ")[0].rstrip(")")
    assert len(quoted) > 10 and "None" not in quoted and f"{plugin}: {quoted}" in words
