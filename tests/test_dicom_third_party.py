"""Files nobody here wrote: the test files shipped inside the installed pydicom
package (CT, MR, US, NM, RT, SEG, SR, secondary captures; JPEG, JPEG 2000,
JPEG-LS, RLE, deflated, big-endian, implicit VR, no File Meta, truncated, odd
VRs; nine of them dual-personality files with a TIFF header in the preamble).
Only files present in the package are used (never pydicom-data downloads).

Each is read or refused with a named reason. Expected outcomes are written
below by hand from what each file is (docs/faults.md lists them); twice: as the
file is, and with the modality and view checks lifted, so that the pixel path
(transfer syntax, decoding, colour, frames, bit depth) is exercised too, since
none of these files is a chest X-ray.
"""

import os

import numpy as np
import pydicom
from pydicom import uid as uids
from pydicom.pixels import get_decoder
import pytest

from data_prep import dicom_io
from tests import faults

TEST_FILES = os.path.join(os.path.dirname(pydicom.data.__file__), "test_files")

READ = "read"        # a finite image in [0, 1]
SAME = "same"        # read, and the same image as MR_small.dcm (lossless variants)
TEXT = "not a readable DICOM file: it holds text"
NO_DICM = "no 'DICM' marker at byte 128"
NO_PIXELS = "no pixel data in the file"
COLOUR = "with real colour content"
NO_PHOTOMETRIC = "no PhotometricInterpretation"
UNDECODABLE = "pixel data cannot be decoded"
NO_DECODER = faults.NO_DECODER


def modality(m):
  return f"modality {m} is not a radiograph"


def needs(ts, readers, outcome: str, otherwise: str = UNDECODABLE):
  """An outcome that depends on the decoders installed for `ts`: NO_DECODER when
  none is, `outcome` when one of the pydicom plugins `readers` is, else
  `otherwise` (checked with pydicom + Pillow, and with bmdjax[dicom-codecs])."""
  return ("decoder", ts, frozenset(readers), outcome, otherwise)


JLS = uids.JPEGLSLossless
JLS_NEAR = uids.JPEGLSNearLossless
JPEG_EXT = uids.JPEGExtended12Bit
JLS_READERS = {"pyjpegls", "gdcm"}
J2K_LOSSLESS = uids.JPEG2000Lossless
JPEG_LOSSLESS = uids.JPEGLosslessSV1

# file -> (outcome as it is, outcome with the modality/view checks lifted);
# an outcome is READ, SAME, a part of the refusal's reason, or needs(...).
FILES = {
    "CT_small.dcm": (modality("CT"), READ),                # TIFF preamble
    "693_J2KI.dcm": (modality("CT"), READ),                # JPEG 2000 lossy, 14-bit
    "J2K_pixelrep_mismatch.dcm": (modality("CT"), READ),   # J2K signedness differs from header
    "MR_small.dcm": (modality("MR"), SAME),                # TIFF preamble
    "MR_small_RLE.dcm": (modality("MR"), SAME),
    "MR_small_bigendian.dcm": (modality("MR"), SAME),
    "MR_small_expb.dcm": (modality("MR"), SAME),           # explicit VR big endian
    "MR_small_implicit.dcm": (modality("MR"), SAME),
    "MR_small_padded.dcm": (modality("MR"), SAME),         # pixel data padded
    "MR_small_jp2klossless.dcm": (modality("MR"), SAME),
    "MR_small_jpeg_ls_lossless.dcm": (modality("MR"), needs(JLS, JLS_READERS, SAME)),
    "MR_truncated.dcm": (modality("MR"), "file is truncated: the pixel data is incomplete"),
    "examples_overlay.dcm": (modality("MR"), READ),        # overlay in the 60xx group
    "JPEG2000.dcm": (modality("NM"), READ),
    # 12-bit JPEG: only pylibjpeg-libjpeg (GPL, not in the extra); Pillow and
    # pydicom's gdcm plugin decode 8-bit only.
    "JPEG-lossy.dcm": (modality("NM"), needs(JPEG_EXT, {"pylibjpeg"}, READ)),
    "JPGExtended.dcm": (modality("NM"), needs(JPEG_EXT, {"pylibjpeg"}, READ)),
    # Neither Pillow (size field read as 3.8e12 pixels) nor pylibjpeg ("failed
    # to read the header") decode it.
    "JPEG2000-embedded-sequence-delimiter.dcm": (modality("NM"), UNDECODABLE),
    "JPEGLSNearLossless_08.dcm": (needs(JLS_NEAR, JLS_READERS, READ),) * 2,  # no Modality
    "JPEGLSNearLossless_16.dcm": (needs(JLS_NEAR, JLS_READERS, READ),) * 2,
    # Pillow rejects its stream ("broken data stream"); openjpeg decodes it.
    "GDCMJ2K_TextGBR.dcm": (needs(J2K_LOSSLESS, {"pylibjpeg", "gdcm"}, COLOUR),) * 2,
    "ExplVR_BigEnd.dcm": (modality("US"), COLOUR),          # RGB, big endian
    "examples_rgb_color.dcm": (modality("US"), COLOUR),     # TIFF preamble
    "examples_jpeg2k.dcm": (modality("US"), COLOUR),        # YBR_RCT
    "examples_palette.dcm": (modality("US"), "photometric interpretation PALETTE COLOR"),
    "examples_ybr_color.dcm": (modality("US"), "30 frames in one file"),
    "SC_jpeg_no_color_transform.dcm": (COLOUR, COLOUR),     # no Modality
    "SC_jpeg_no_color_transform_2.dcm": (COLOUR, COLOUR),
    "SC_rgb_jpeg_app14_dcmd.dcm": (COLOUR, COLOUR),
    "SC_rgb_jls_lossy_line.dcm": (needs(JLS_NEAR, JLS_READERS, COLOUR),) * 2,
    "SC_rgb_jls_lossy_sample.dcm": (needs(JLS_NEAR, JLS_READERS, COLOUR),) * 2,
    **{f"SC_rgb_{v}.dcm": (modality("OT"), COLOUR) for v in (
        "dcmtk_+eb+cr", "dcmtk_+eb+cy+n1", "dcmtk_+eb+cy+n2", "dcmtk_+eb+cy+np",
        "dcmtk_+eb+cy+s2", "dcmtk_+eb+cy+s4", "gdcm_KY", "jpeg", "jpeg_dcmd", "jpeg_dcmtk",
        "jpeg_lossy_gdcm", "rle", "rle_16bit", "rle_32bit", "small_odd",
        "small_odd_big_endian", "small_odd_jpeg")},
    "SC_rgb_jpeg_gdcm.dcm": (modality("OT"), needs(JPEG_LOSSLESS, {"gdcm", "pylibjpeg"},
                                                   COLOUR)),
    **{f"SC_rgb_rle{v}_2frame.dcm": (modality("OT"), "2 frames in one file")
       for v in ("", "_16bit", "_32bit")},
    "SC_ybr_full_422_uncompressed.dcm": (modality("OT"), COLOUR),
    "image_dfl.dcm": (modality("OT"), READ),                # deflated
    "liver_1frame.dcm": (modality("SEG"), "1-bit pixels"),  # a segmentation mask
    "liver_expb_1frame.dcm": (modality("SEG"), "1-bit pixels"),
    "rtdose_1frame.dcm": (modality("RTDOSE"), READ),        # 32-bit dose grid
    "rtdose_expb_1frame.dcm": (modality("RTDOSE"), READ),
    "rtdose_rle_1frame.dcm": (modality("RTDOSE"), READ),
    "rtdose.dcm": (modality("RTDOSE"), "15 frames in one file"),
    "rtdose_expb.dcm": (modality("RTDOSE"), "15 frames in one file"),
    "rtdose_rle.dcm": (modality("RTDOSE"), "15 frames in one file"),
    "badVR.dcm": (modality("RTDOSE"), "not a readable DICOM file (ValueError"),  # IS '1A'
    "meta_missing_tsyntax.dcm": (NO_PHOTOMETRIC,) * 2,
    "nested_priv_SQ.dcm": (NO_PHOTOMETRIC,) * 2,
    "rtplan.dcm": (NO_PIXELS,) * 2,
    "rtplan_truncated.dcm": ("file is truncated or damaged before the pixel data",) * 2,
    "reportsi.dcm": (NO_PIXELS,) * 2,
    "reportsi_with_empty_number_tags.dcm": (NO_PIXELS,) * 2,
    "test-SR.dcm": (NO_PIXELS,) * 2,
    "waveform_ecg.dcm": (NO_PIXELS,) * 2,
    "UN_sequence.dcm": (NO_PIXELS,) * 2,
    "empty_charset_LEI.dcm": (NO_PIXELS,) * 2,
    "no_meta_group_length.dcm": (NO_PIXELS,) * 2,
    "priv_SQ.dcm": (NO_PIXELS,) * 2,
    "ExplVR_LitEndNoMeta.dcm": (NO_DICM + " and no image elements",) * 2,  # RT plan
    "rtstruct.dcm": (NO_DICM + " and no image elements",) * 2,
    "ExplVR_BigEndNoMeta.dcm": (NO_DICM,) * 2,
    "no_meta.dcm": (NO_DICM,) * 2,
    "crayons.icc": (NO_DICM,) * 2,                          # an ICC colour profile
    "zipMR.gz": ("not a readable DICOM file: it is a gzip archive",) * 2,
    "README.txt": (TEXT,) * 2,
    "rtplan.dump": (TEXT,) * 2,
    "rtstruct.dump": (TEXT,) * 2,
    "test1.json": (TEXT,) * 2,
    "test_PN.json": (TEXT,) * 2,
    "dicomdirtests": ("is a folder, not a DICOM file",) * 2,
}


def _resolve(expected):
  """needs(...) -> the outcome for the decoders installed here."""
  if not isinstance(expected, tuple):
    return expected
  _, ts, readers, outcome, otherwise = expected
  if not faults.decoder_available(ts):
    return NO_DECODER
  return outcome if readers & set(get_decoder(ts).available_plugins) else otherwise


class _Everything(tuple):
  """Admits every modality or view: the checks lifted."""

  def __contains__(self, item):
    return True


@pytest.fixture(scope="module")
def mr_small():
  with pytest.MonkeyPatch.context() as m:
    m.setattr(dicom_io, "RADIOGRAPH_MODALITIES", _Everything())
    return dicom_io.read_display_values(os.path.join(TEST_FILES, "MR_small.dcm"))


def _check(path, expected, reference):
  if expected in (READ, SAME):
    rad = dicom_io.read_radiograph(path)
    assert rad.image.dtype == np.float32 and np.isfinite(rad.image).all()
    assert 0.0 <= rad.image.min() and rad.image.max() <= 1.0
    if expected == SAME:  # the same values as the plain file, however encoded
      np.testing.assert_allclose(dicom_io.read_display_values(path), reference)
    return
  with pytest.raises(dicom_io.StudyError) as e:
    dicom_io.read_radiograph(path)
  assert e.value.path == path and str(e.value).startswith(path + ": ")
  assert expected in e.value.reason, e.value.reason


def _path(name):
  path = os.path.join(TEST_FILES, name)
  if not os.path.exists(path):
    pytest.skip(f"{name} is not shipped with pydicom {pydicom.__version__}")
  return path


@pytest.mark.parametrize("name", list(FILES))
def test_as_it_is(name, mr_small):
  _check(_path(name), _resolve(FILES[name][0]), mr_small)


@pytest.mark.parametrize("name", list(FILES))
def test_pixel_path(name, mr_small, monkeypatch):
  monkeypatch.setattr(dicom_io, "RADIOGRAPH_MODALITIES", _Everything())
  monkeypatch.setattr(dicom_io, "FRONTAL_VIEWS", _Everything())
  _check(_path(name), _resolve(FILES[name][1]), mr_small)


def test_dual_personality_files_among_them():
  """pydicom's own CT and MR samples carry a TIFF header in the preamble."""
  for name in ("CT_small.dcm", "MR_small.dcm"):
    raw = open(os.path.join(TEST_FILES, name), "rb").read(132)
    assert raw[:4] in (b"II*\x00", b"MM\x00*") and raw[128:132] == b"DICM"
