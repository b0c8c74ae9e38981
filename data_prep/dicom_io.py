"""Reading frontal chest radiographs from DICOM into normalised float images.

Every failure raises `StudyError` whose message names the file, what is wrong
and what to do; batch jobs catch it, record it in their manifest and go on.
Nothing else escapes `read_radiograph`: a hospital archive holds files that
no rule foresaw, and one of them must not stop a batch. docs/faults.md lists
the faults tried and their outcomes.

Messages never quote header values other than technical ones (modality, view,
photometric interpretation, bit depth, transfer syntax): names, IDs, dates and
UIDs must not reach manifests. pydicom's own warnings about damaged headers are
silenced while reading: in a batch of thousands they would bury what the
manifest already says, and pydicom's validation messages may quote values.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import re
import warnings

import numpy as np
import pydicom
from pydicom import uid as uids
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder

RADIOGRAPH_MODALITIES = ("CR", "DX", "DR", "RG")
FRONTAL_VIEWS = ("PA", "AP", "")
# Larger inputs are refused before decoding, so that a damaged header or a
# stitched long-leg study cannot exhaust a worker's memory (a chest radiograph
# is at most ~4300 x 4300 = 18.5 megapixels).
MAX_PIXELS = 50_000_000
MAX_FILE_BYTES = 1 << 30
CODECS_EXTRA = "pip install 'bmdjax[dicom-codecs]'"
# Packages that decode each compressed transfer syntax (pydicom plugins).
DECODER_PACKAGES = {
    uids.JPEGBaseline8Bit: "python-gdcm, or pylibjpeg + pylibjpeg-libjpeg",
    # 12-bit data: pylibjpeg-libjpeg only (pydicom's gdcm plugin reads 8-bit).
    uids.JPEGExtended12Bit: "pylibjpeg + pylibjpeg-libjpeg (GPL), or python-gdcm for 8-bit",
    uids.JPEGLossless: "python-gdcm, or pylibjpeg + pylibjpeg-libjpeg (GPL)",
    uids.JPEGLosslessSV1: "python-gdcm, or pylibjpeg + pylibjpeg-libjpeg (GPL)",
    uids.JPEGLSLossless: "python-gdcm or pyjpegls",
    uids.JPEGLSNearLossless: "python-gdcm or pyjpegls",
    uids.JPEG2000Lossless: "pylibjpeg + pylibjpeg-openjpeg, or python-gdcm",
    uids.JPEG2000: "pylibjpeg + pylibjpeg-openjpeg, or python-gdcm",
    uids.HTJ2KLossless: "pylibjpeg + pylibjpeg-openjpeg",
    uids.HTJ2KLosslessRPCL: "pylibjpeg + pylibjpeg-openjpeg",
    uids.HTJ2K: "pylibjpeg + pylibjpeg-openjpeg",
    uids.RLELossless: "pylibjpeg + pylibjpeg-rle",
}
# Decoding plugins in the order tried. python-gdcm comes last and is skipped for
# JPEG 2000 when another plugin can decode it: it aborts the whole process (an
# uncaught C++ exception) on a damaged JPEG 2000 stream instead of raising.
PLUGIN_ORDER = ("pylibjpeg", "pyjpegls", "pillow", "pydicom", "gdcm")
_J2K = (uids.JPEG2000Lossless, uids.JPEG2000, uids.HTJ2KLossless, uids.HTJ2KLosslessRPCL,
        uids.HTJ2K)
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420")
# Magic numbers of files that are often exported by mistake instead of DICOM.
_MAGIC = ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"),
          (b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP archive"),
          (b"\x1f\x8b", "a gzip archive"), (b"II*\x00", "a TIFF image"),
          (b"MM\x00*", "a TIFF image"))
_EXPORT_AGAIN = "copy or export it from the archive again"
# Raw detector images (PS3.3 C.8.11.1.1.1 Presentation Intent Type): before the
# vendor's image processing (flat-field, log, equalisation), never shown to a
# reader; a model trained on presentation images must not see them.
FOR_PROCESSING_SOP_CLASSES = (uids.DigitalXRayImageStorageForProcessing,
                              uids.DigitalMammographyXRayImageStorageForProcessing,
                              uids.DigitalIntraOralXRayImageStorageForProcessing)
# Pixel spacing (mm) outside this range is a header error, not a chest film.
SPACING_RANGE_MM = (0.02, 2.0)
# Where Radiograph.pixel_spacing came from ("estimated": from the landmarks,
# data_prep.landmark_checks.estimate_spacing; "unknown": NaN).
SPACING_SOURCES = ("PixelSpacing", "ImagerPixelSpacing", "ImagerPixelSpacing/magnification",
                   "estimated", "unknown")


class StudyError(ValueError):
  """A study that cannot be used; the message says which file and why."""

  def __init__(self, path, reason: str):
    self.path = str(path)
    self.reason = reason
    super().__init__(f"{path}: {reason}")


@dataclasses.dataclass
class Radiograph:
  image: np.ndarray          # float32 [H, W] in [0, 1], bone bright
  pixel_spacing: float       # mm per pixel (row spacing); NaN when not known
  photometric: str
  modality: str
  bits_stored: int
  spacing_source: str = "unknown"  # one of SPACING_SOURCES


def _plausible_spacing(ds, tag: str) -> float | None:
  """The row spacing of a `tag` holding row\\column spacing (mm), or None when
  it is missing, not numeric, not positive or outside SPACING_RANGE_MM in
  either direction (a vendor's 0.000\\0.000 means "not calibrated")."""
  try:
    value = ds.get(tag)
    if value is None:
      return None
    values = [float(v) for v in (value if isinstance(value, (list, tuple, MultiValue))
                                 else [value])]
  except (TypeError, ValueError, IndexError):
    return None
  lo, hi = SPACING_RANGE_MM
  if not values or not all(np.isfinite(v) and lo <= v <= hi for v in values):
    return None
  return values[0]


def pixel_spacing(ds) -> tuple[float, str]:
  """(mm per pixel, source) from the header, source one of SPACING_SOURCES.

  PixelSpacing (0028,0030) is the spacing in the patient (PS3.3 10.7.1.3); when
  it is missing or implausible, ImagerPixelSpacing (0018,1164) is the spacing at
  the detector, which magnifies the patient by the Estimated Radiographic
  Magnification Factor (0018,1114, source-to-image over source-to-object
  distance, >= 1), divided out when it is stated. Else NaN, "unknown".
  """
  spacing = _plausible_spacing(ds, "PixelSpacing")
  if spacing is not None:
    return spacing, "PixelSpacing"
  spacing = _plausible_spacing(ds, "ImagerPixelSpacing")
  if spacing is None:
    return float("nan"), "unknown"
  try:
    magnification = float(ds.get("EstimatedRadiographicMagnificationFactor"))
  except (TypeError, ValueError):
    magnification = float("nan")
  if np.isfinite(magnification) and 1.0 <= magnification <= 3.0:
    return spacing / magnification, "ImagerPixelSpacing/magnification"
  return spacing, "ImagerPixelSpacing"


def normalise(pixels: np.ndarray, low_pct: float = 0.5,
              high_pct: float = 99.5) -> np.ndarray:
  """Robust percentile rescale to [0, 1]; removes exposure and detector gain.

  The percentiles are taken over the pixels strictly between the image's
  extreme values: shutter masks, burned-in text and saturated areas sit at
  those extremes, hold no anatomy, and would otherwise set the grey scale by
  how much of the film they cover.
  """
  pixels = np.asarray(pixels, np.float32)
  inner = pixels[(pixels > pixels.min()) & (pixels < pixels.max())]
  basis = inner if inner.size >= 0.5 * pixels.size else pixels
  # Python floats, so that NumPy 2 keeps the result float32.
  lo, hi = (float(v) for v in np.percentile(basis, [low_pct, high_pct]))
  if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
    raise ValueError("image has no contrast (constant pixel values)")
  return np.clip((pixels - lo) / (hi - lo), 0.0, 1.0)


def _describe(e: BaseException, limit: int = 160) -> str:
  """An exception as `Type: message`, cut short (pydicom's can be long)."""
  text = " ".join(str(e).split())
  if len(text) > limit:
    text = text[:limit] + "..."
  return f"{type(e).__name__}: {text}" if text else type(e).__name__


@contextlib.contextmanager
def _quiet_pydicom():
  """pydicom both warns and logs about damaged headers (see the module doc)."""
  logger = logging.getLogger("pydicom")
  level = logger.level
  logger.setLevel(logging.CRITICAL)
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      yield
  finally:
    logger.setLevel(level)


class _Reads(io.BytesIO):
  """Remembers short reads: pydicom reads a cut-off file without complaint."""

  def __init__(self, data: bytes):
    super().__init__(data)
    self.short = 0

  def read(self, n=-1):
    out = super().read(n)
    if n is not None and n > 0 and len(out) < n:
      # One empty read (looking for the next element at the end) is normal.
      self.short += 1 if not out else 2
    return out

  @property
  def truncated(self) -> bool:
    return self.short > 1


def _read_bytes(path: str) -> bytes:
  try:
    size = os.stat(path).st_size
    if os.path.isdir(path):
      raise StudyError(path, "is a folder, not a DICOM file; give the files in it")
    if size == 0:
      raise StudyError(path, f"file is empty (0 bytes): {_EXPORT_AGAIN}")
    if size > MAX_FILE_BYTES:
      raise StudyError(path, f"file is {size / 2**30:.1f} GiB, over the "
                       f"{MAX_FILE_BYTES / 2**30:.0f} GiB limit for one radiograph; "
                       "check that it is a single chest X-ray")
    with open(path, "rb") as f:
      return f.read()
  except FileNotFoundError:
    raise StudyError(path, "file not found") from None
  except PermissionError:
    raise StudyError(path, "file cannot be opened: permission denied; give this "
                     "user read access") from None
  except OSError as e:
    raise StudyError(path, f"file cannot be read ({_describe(e)}); check the disk "
                     "or network share") from None


def _parse(path: str, data: bytes):
  """bytes -> (dataset, truncated). Accepts files without the 128-byte preamble
  and File Meta (older exports), which start directly with an element."""
  head = data[:4]
  # PS3.10 7.1: the 128-byte preamble may hold anything; "dual-personality"
  # files put a TIFF header there so that non-DICOM viewers open them. So the
  # DICM marker is checked before the magic numbers of other formats.
  dicm = data[128:132] == b"DICM"
  for magic, kind in _MAGIC if not dicm else ():
    if data.startswith(magic):
      raise StudyError(path, f"not a readable DICOM file: it is {kind}; export the "
                       "original DICOM instead")
  raw_dataset = not dicm and head[:2] in (b"\x02\x00", b"\x08\x00")
  if not dicm and not raw_dataset:
    if len(data) < 132:
      raise StudyError(path, f"not a readable DICOM file: only {len(data)} bytes, too "
                       f"short for DICOM (truncated?); {_EXPORT_AGAIN}")
    text = data[:512]
    kind = "it holds text" if text.isascii() and b"\x00" not in text else (
        "no 'DICM' marker at byte 128")
    raise StudyError(path, f"not a readable DICOM file: {kind}; only DICOM files can "
                     "be used")
  fp = _Reads(data)
  try:
    ds = pydicom.dcmread(fp, force=raw_dataset)
  except Exception as e:  # pydicom raises many types for damaged input
    why = "file is truncated" if fp.truncated else "header cannot be parsed"
    raise StudyError(path, f"not a readable DICOM file: {why} ({_describe(e)}); "
                     f"{_EXPORT_AGAIN}") from None
  if raw_dataset and "PixelData" not in ds and "Rows" not in ds:
    raise StudyError(path, "not a readable DICOM file: no 'DICM' marker at byte 128 and "
                     "no image elements")
  return ds, fp.truncated


def _transfer_syntax(path: str, ds) -> uids.UID:
  """The transfer syntax, inferred from the encoding when the File Meta lacks it
  (possible only for uncompressed pixel data)."""
  meta = getattr(ds, "file_meta", None) or pydicom.dataset.FileMetaDataset()
  ts = meta.get("TransferSyntaxUID")
  if ts is None:
    if ds["PixelData"].is_undefined_length:
      raise StudyError(path, "compressed pixel data but no transfer syntax in the file "
                       "meta, so the codec is unknown; re-export the file")
    implicit, little = ds.original_encoding
    if not little:
      ts = uids.ExplicitVRBigEndian
    else:
      ts = uids.ImplicitVRLittleEndian if implicit else uids.ExplicitVRLittleEndian
    meta.TransferSyntaxUID = ts
    ds.file_meta = meta
  ts = uids.UID(str(ts))
  if not ts.is_transfer_syntax:
    raise StudyError(path, f"unknown transfer syntax {ts}: convert the file to a standard "
                     "one (e.g. `gdcmconv --raw` or dcmtk `dcmdjpeg`)")
  return ts


def _check_decoder(path: str, ts: uids.UID) -> None:
  if not ts.is_compressed:
    return
  try:
    decoder = get_decoder(ts)
  except NotImplementedError:
    raise StudyError(path, f"pixel data is compressed as {ts.name} ({ts}), which no "
                     "DICOM image decoder supports; export the image uncompressed") from None
  if not decoder.is_available:
    extra = DECODER_PACKAGES.get(ts)
    raise StudyError(path, f"pixel data is compressed as {ts.name} ({ts}) and no decoder "
                     f"for it is installed: {CODECS_EXTRA}"
                     + (f" (or install {extra})" if extra else ""))


class _DecodeFailed(Exception):
  pass


def _plugins(ts: uids.UID) -> list[str]:
  """The decoding plugins to try for a compressed transfer syntax, in order."""
  names = sorted(get_decoder(ts).available_plugins, key=lambda p: (
      PLUGIN_ORDER.index(p) if p in PLUGIN_ORDER else len(PLUGIN_ORDER) - 1))
  if ts in _J2K and len(names) > 1:
    names = [p for p in names if p != "gdcm"]
  return names


def _decode(ds, ts: uids.UID) -> np.ndarray:
  """The pixel array; for compressed data each plugin in turn (pydicom's own
  order would reach gdcm, see PLUGIN_ORDER)."""
  if not ts.is_compressed:
    return ds.pixel_array
  errors = []
  for plugin in _plugins(ts):
    ds.pixel_array_options(decoding_plugin=plugin)
    try:
      return ds.pixel_array
    except Exception as e:  # decoders raise many types
      # pydicom wraps each plugin's error as "...all available plugins: NAME: why".
      why = " ".join(str(e).split()).split(f"{plugin}: ", 1)[-1]
      why = re.sub(r" at 0x[0-9a-fA-F]+", "", why)  # object addresses
      errors.append(f"{plugin}: {why[:100]}")
  raise _DecodeFailed("; ".join(errors))


def _check_header(path: str, ds) -> None:
  modality = str(ds.get("Modality", "") or "").upper()
  if modality and modality not in RADIOGRAPH_MODALITIES:
    raise StudyError(path, f"modality {modality} is not a radiograph (expected one of "
                     f"{', '.join(RADIOGRAPH_MODALITIES)}); only chest X-rays can be used")
  view = str(ds.get("ViewPosition", "") or "").upper()
  if view not in FRONTAL_VIEWS:
    raise StudyError(path, f"view position {view} is not frontal (PA/AP); lateral and "
                     "other views cannot be used: leave this study out")
  intent = str(ds.get("PresentationIntentType", "") or "").upper().strip()
  sop_class = str(ds.get("SOPClassUID", "") or getattr(
      getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "") or "")
  if intent == "FOR PROCESSING" or sop_class in FOR_PROCESSING_SOP_CLASSES:
    raise StudyError(path, "a FOR PROCESSING image (raw detector data before the "
                     "vendor's image processing, not meant for viewing); export the FOR "
                     "PRESENTATION image of this study from the modality or the archive")
  photometric = str(ds.get("PhotometricInterpretation", "") or "").upper()
  if not photometric:
    raise StudyError(path, "no PhotometricInterpretation in the header, so it is unknown "
                     "whether bone is bright or dark; fix the header or re-export")
  if photometric not in ("MONOCHROME1", "MONOCHROME2") and photometric not in COLOUR:
    raise StudyError(path, f"photometric interpretation {photometric}: only greyscale "
                     "(MONOCHROME1/2) radiographs can be used")
  missing = [k for k in ("Rows", "Columns", "BitsAllocated") if ds.get(k) is None]
  if missing:
    raise StudyError(path, f"header lacks {', '.join(missing)}, needed to read the pixel "
                     f"data; {_EXPORT_AGAIN}")
  rows, cols = int(ds.Rows), int(ds.Columns)
  frames = int(ds.get("NumberOfFrames", 1) or 1)
  if rows < 1 or cols < 1:
    raise StudyError(path, f"image is {rows} x {cols} pixels: empty")
  if rows * cols > MAX_PIXELS:
    raise StudyError(path, f"image is {rows} x {cols} pixels, over the limit of "
                     f"{MAX_PIXELS / 1e6:.0f} megapixels (a chest radiograph has under 20); "
                     "check it is the right image, or downsample it and its landmarks")
  if frames != 1:
    raise StudyError(path, f"{frames} frames in one file; a chest radiograph has one: "
                     "export the frontal image on its own")
  bits = int(ds.get("BitsStored", ds.BitsAllocated))
  if bits < 8:
    raise StudyError(path, f"{bits}-bit pixels: not a radiograph (a mask or an overlay?)")


def _grey(path: str, ds, pixels: np.ndarray, photometric: str) -> np.ndarray:
  """Modality and VOI LUTs, bone bright; colour images only if they are grey."""
  if photometric in COLOUR:
    # pydicom returns RGB. Grey saved as colour (secondary captures) is kept.
    if pixels.ndim != 3 or pixels.shape[-1] != 3:
      raise StudyError(path, f"expected one {photometric} frame, got pixel array of "
                       f"shape {pixels.shape}")
    rgb = pixels.astype(np.float32)
    if np.abs(rgb - rgb.mean(axis=-1, keepdims=True)).max() > 2.0:
      raise StudyError(path, f"colour image ({photometric}) with real colour content: a "
                       "radiograph is greyscale (a screenshot or annotated copy?); export "
                       "the original greyscale image")
    return rgb.mean(axis=-1)
  if pixels.ndim != 2:
    raise StudyError(path, f"expected one 2-D frame, got pixel array of shape {pixels.shape}")
  values = apply_modality_lut(pixels, ds)
  if "WindowCenter" in ds or "VOILUTSequence" in ds:
    try:
      values = apply_voi_lut(values, ds, index=0)
    except (ValueError, TypeError, IndexError, KeyError, AttributeError):
      pass  # an invalid window is only a display hint; normalisation follows anyway
  values = np.asarray(values, np.float32)
  if not np.all(np.isfinite(values)):
    raise StudyError(path, "pixel values are not finite after the modality LUT "
                     "(RescaleSlope/Intercept broken?)")
  return -values if _inverted(path, ds, photometric, values) else values


def _inverted(path: str, ds, photometric: str, values: np.ndarray) -> bool:
  """Whether the VOI LUT output must be negated to give display values (bone
  bright on a chest film).

  PS3.3 C.7.6.3.1.2: MONOCHROME1 means the lowest value is shown white.
  Presentation LUT Shape (2050,0020), PS3.3 C.11.4/C.11.6: IDENTITY, the VOI
  output is already in P-Values (higher is brighter); INVERSE, it is after
  inversion. The DX Image Module (C.8.11.3, Table C.8-70; the MG and IO image
  modules specialise it) says "IDENTITY shall be used if Photometric
  Interpretation is MONOCHROME2, INVERSE if MONOCHROME1": the shape accounts for
  the photometric interpretation, it does not add to it. So MONOCHROME1 +
  INVERSE is one inversion (as MONOCHROME1 alone; viewers that inverted twice
  were fixed, e.g. Weasis 4.1), and MONOCHROME2 + INVERSE, where it occurs, is
  one inversion too. MONOCHROME1 + IDENTITY contradicts itself (lowest white
  vs lowest black; some vendors write it, see dcm4che's dcm2jpg --noshape);
  Pixel Intensity Relationship Sign (0028,1041, C.8.11.3), which describes the
  stored values and not their display, settles it when present: +1, lower
  values mean less X-ray intensity, i.e. bone is low and must be inverted;
  -1, bone is high. Without it the film's own anatomy decides (`chest_polarity`:
  the mediastinum and spine are brighter than the lungs on every frontal chest
  film); where that is not clear either, the study is refused: guessing risks a
  film with bone dark, the worst kind of silent error.
  """
  shape = str(ds.get("PresentationLUTShape", "") or "").upper().strip()
  if not shape and "PresentationLUTSequence" in ds:
    shape = _presentation_lut_direction(path, ds)
  if not shape:
    return photometric == "MONOCHROME1"
  if shape not in ("IDENTITY", "INVERSE"):
    raise StudyError(path, f"Presentation LUT Shape {shape} is neither IDENTITY nor "
                     "INVERSE (PS3.3 C.8.11.3, C.11.6), so the display polarity is unknown; "
                     f"{_EXPORT_AGAIN}")
  if shape == "INVERSE":
    return True
  if photometric != "MONOCHROME1":
    return False
  try:
    sign = int(ds.get("PixelIntensityRelationshipSign"))
  except (TypeError, ValueError):
    sign = 0
  if sign in (1, -1):
    try:  # +1: bone stored low; a negative rescale slope turns that round
      slope = 1.0 if "ModalityLUTSequence" in ds else float(ds.get("RescaleSlope", 1))
    except (TypeError, ValueError):
      slope = 1.0
    return (sign > 0) == (slope >= 0)
  anatomy = chest_polarity(values)
  if anatomy:
    return anatomy < 0
  raise StudyError(path, "MONOCHROME1 with Presentation LUT Shape IDENTITY contradict "
                   "each other (PS3.3 C.8.11.3: IDENTITY goes with MONOCHROME2), no "
                   "Pixel Intensity Relationship Sign settles it and the image does not "
                   "show a chest film's mediastinum brighter or darker than its lungs, so "
                   "it is unknown whether bone is bright or dark; fix the header "
                   "(MONOCHROME1 + INVERSE, or MONOCHROME2 + IDENTITY) or export the "
                   "image again")


# Frontal chest film, fractions of height/width: the mediastinum and spine band
# and the two lung bands. Contrast below POLARITY_MARGIN (of the 1-99th
# percentile range) settles nothing.
MEDIASTINUM_BAND = ((0.25, 0.75), (0.44, 0.56))
LUNG_BANDS = (((0.25, 0.60), (0.15, 0.35)), ((0.25, 0.60), (0.65, 0.85)))
POLARITY_MARGIN = 0.03


def chest_polarity(values: np.ndarray) -> int:
  """+1 if `values` show a frontal chest film with bone bright (mediastinum
  brighter than both lungs by POLARITY_MARGIN), -1 if bone dark, 0 if unclear.
  Used only where the header contradicts itself: a real film's anatomy is the
  one polarity reference left."""
  v = np.asarray(values, np.float64)
  step = max(1, min(v.shape) // 128)
  v = v[::step, ::step]
  lo, hi = np.percentile(v, (1, 99))
  if not hi > lo:
    return 0
  v = (v - lo) / (hi - lo)
  h, w = v.shape

  def band(rows, cols):
    return float(np.median(v[int(rows[0] * h):int(rows[1] * h),
                             int(cols[0] * w):int(cols[1] * w)]))

  centre = band(*MEDIASTINUM_BAND)
  lungs = [band(*b) for b in LUNG_BANDS]
  if min(centre - l for l in lungs) > POLARITY_MARGIN:
    return 1
  if max(centre - l for l in lungs) < -POLARITY_MARGIN:
    return -1
  return 0


def _presentation_lut_direction(path: str, ds) -> str:
  """A Presentation LUT Sequence (2050,0010; C.11.4) as the shape it amounts to
  for polarity: IDENTITY when it rises, INVERSE when it falls (its curve only
  changes contrast, which normalisation follows)."""
  try:
    item = ds.PresentationLUTSequence[0]
    data = item.LUTData
    values = (np.frombuffer(data, "<u2") if isinstance(data, bytes)
              else np.atleast_1d(np.asarray(data, np.float64))).astype(np.float64)
  except (AttributeError, IndexError, TypeError, ValueError):
    values = np.zeros(0)
  steps = np.diff(values)
  if values.size > 1 and np.all(steps >= 0) and values[-1] > values[0]:
    return "IDENTITY"
  if values.size > 1 and np.all(steps <= 0) and values[-1] < values[0]:
    return "INVERSE"
  raise StudyError(path, "the Presentation LUT Sequence is empty, flat or not monotonic, "
                   f"so the display polarity is unknown; {_EXPORT_AGAIN}")


def _values(path: str):
  """(dataset, display values): everything before the normalisation."""
  ds, truncated = _parse(path, _read_bytes(path))
  if "PixelData" not in ds:
    raise StudyError(path, "file is truncated or damaged before the pixel data (an "
                     f"element runs past the end of the file); {_EXPORT_AGAIN}"
                     if truncated else "no pixel data in the file (a report or a "
                     "structured document?); only images can be used")
  _check_header(path, ds)
  ts = _transfer_syntax(path, ds)
  _check_decoder(path, ts)
  try:
    pixels = _decode(ds, ts)
  except Exception as e:  # decoders raise many types
    if truncated:
      raise StudyError(path, f"file is truncated: the pixel data is incomplete; "
                       f"{_EXPORT_AGAIN}") from None
    if isinstance(e, _DecodeFailed):
      extra = DECODER_PACKAGES.get(ts)
      raise StudyError(path, f"{ts.name} pixel data cannot be decoded ({e}); "
                       f"the file may be damaged ({_EXPORT_AGAIN}), or another decoder "
                       f"may read it: {CODECS_EXTRA}"
                       + (f" (or install {extra})" if extra else "")) from None
    raise StudyError(path, f"pixel data cannot be read ({_describe(e)}); "
                     f"{_EXPORT_AGAIN}") from None
  photometric = str(ds.PhotometricInterpretation).upper()
  return ds, _grey(path, ds, pixels, photometric)


def _read(path: str) -> Radiograph:
  ds, values = _values(path)
  try:
    image = normalise(values)
  except ValueError as e:
    raise StudyError(path, str(e)) from None
  spacing, source = pixel_spacing(ds)
  return Radiograph(image=image, pixel_spacing=spacing, spacing_source=source,
                    photometric=str(ds.PhotometricInterpretation).upper(),
                    modality=str(ds.get("Modality", "") or "").upper(),
                    bits_stored=int(ds.get("BitsStored", 0) or 0))


def _guarded(path: str | os.PathLike, read):
  """read(path) under the reader's error policy: StudyError and nothing else."""
  path = os.fspath(path)
  try:
    with _quiet_pydicom():
      return read(path)
  except StudyError:
    raise
  except MemoryError:
    raise StudyError(path, "out of memory while reading the image; use fewer "
                     "workers") from None
  except Exception as e:  # an unforeseen defect in the file: still one bad study
    raise StudyError(path, f"not a readable DICOM file ({_describe(e)}); "
                     f"{_EXPORT_AGAIN}") from None


def read_radiograph(path: str | os.PathLike) -> Radiograph:
  """Reads one frontal chest radiograph: modality LUT, VOI LUT, polarity
  (MONOCHROME1, Presentation LUT Shape) and percentile normalisation, so bone is
  bright on any scanner; pixel spacing with its source (`pixel_spacing`).

  Raises StudyError, and nothing else, for any file that cannot be used.
  """
  return _guarded(path, _read)


def read_display_values(path: str | os.PathLike) -> np.ndarray:
  """float32 [H, W]: the stored pixels through the modality LUT, the VOI LUT
  (PS3.3 C.11.1-C.11.2) and the polarity of `_inverted`, i.e. P-Values up to a
  linear map, bone bright, before `normalise`. Same checks and errors as
  read_radiograph."""
  return _guarded(path, lambda p: _values(p)[1])
