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
    uids.JPEGExtended12Bit: "python-gdcm, or pylibjpeg + pylibjpeg-libjpeg",
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


class StudyError(ValueError):
  """A study that cannot be used; the message says which file and why."""

  def __init__(self, path, reason: str):
    self.path = str(path)
    self.reason = reason
    super().__init__(f"{path}: {reason}")


@dataclasses.dataclass
class Radiograph:
  image: np.ndarray          # float32 [H, W] in [0, 1], bone bright
  pixel_spacing: float       # mm per pixel (row spacing); nan when not stated
  photometric: str
  modality: str
  bits_stored: int


def _spacing(ds) -> float:
  for tag in ("PixelSpacing", "ImagerPixelSpacing"):
    try:
      value = ds.get(tag)
      spacing = float(value[0]) if value is not None and len(value) >= 1 else np.nan
    except (TypeError, ValueError, IndexError):
      continue
    if np.isfinite(spacing) and spacing > 0:
      return spacing
  return float("nan")


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
  for magic, kind in _MAGIC:
    if data.startswith(magic):
      raise StudyError(path, f"not a readable DICOM file: it is {kind}; export the "
                       "original DICOM instead")
  dicm = data[128:132] == b"DICM"
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
  return -values if photometric == "MONOCHROME1" else values


def _read(path: str) -> Radiograph:
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
      raise StudyError(path, f"{ts.name} pixel data cannot be decoded ({e}); "
                       f"the file may be damaged ({_EXPORT_AGAIN}), or another decoder "
                       f"may read it: {CODECS_EXTRA}") from None
    raise StudyError(path, f"pixel data cannot be read ({_describe(e)}); "
                     f"{_EXPORT_AGAIN}") from None
  photometric = str(ds.PhotometricInterpretation).upper()
  values = _grey(path, ds, pixels, photometric)
  try:
    image = normalise(values)
  except ValueError as e:
    raise StudyError(path, str(e)) from None
  return Radiograph(image=image, pixel_spacing=_spacing(ds), photometric=photometric,
                    modality=str(ds.get("Modality", "") or "").upper(),
                    bits_stored=int(ds.get("BitsStored", 0) or 0))


def read_radiograph(path: str | os.PathLike) -> Radiograph:
  """Reads one frontal chest radiograph: modality LUT, VOI LUT, MONOCHROME1
  inversion and percentile normalisation, so bone is bright on any scanner.

  Raises StudyError, and nothing else, for any file that cannot be used.
  """
  path = os.fspath(path)
  try:
    with _quiet_pydicom():
      return _read(path)
  except StudyError:
    raise
  except MemoryError:
    raise StudyError(path, "out of memory while reading the image; use fewer "
                     "workers") from None
  except Exception as e:  # an unforeseen defect in the file: still one bad study
    raise StudyError(path, f"not a readable DICOM file ({_describe(e)}); "
                     f"{_EXPORT_AGAIN}") from None
