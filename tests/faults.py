"""Faulty inputs made from a good DICOM, shared by the fault tests and docs/faults.md.

Each `Fault` writes one damaged or unusual variant of a good radiograph and says
what reading it must give: the same image (read as is, or after a conversion) or
a refusal whose reason contains `expect`. Compressed variants use a real encoder
where one is installed (pydicom for RLE, Pillow for JPEG and JPEG 2000, pyjpegls,
python-gdcm) and otherwise a dataset whose transfer syntax says so around
made-up bytes; their expected outcome depends on the decoders installed.

  python -m tests.faults        # prints the table of docs/faults.md
"""

from __future__ import annotations

import copy
import dataclasses
import io
import os
import struct
import sys
from typing import Callable

import numpy as np
import pydicom
from pydicom import uid as uids
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder, get_encoder

from data_prep import dicom_io
from data_prep.synthesize import write_dicom

# Fake PHI written into every base file: none of it may reach an output.
PHI = dict(PatientName="DOE^JANE^Q", PatientID="MRN0048151623",
           PatientBirthDate="19471103", AccessionNumber="ACC77120459",
           InstitutionName="Saint Nowhere Infirmary", ReferringPhysicianName="HOUSE^GREGORY",
           StudyDescription="CHEST PA jane doe follow-up", ImageComments="call Jane Doe "
           "on 555-0199 re: MRN0048151623", OperatorsName="NURSE^RATCHED",
           StudyInstanceUID="1.2.826.0.1.3680043.8.498.111", SeriesInstanceUID=
           "1.2.826.0.1.3680043.8.498.222", SOPInstanceUID="1.2.826.0.1.3680043.8.498.333",
           PatientSex="F")
PHI_STRINGS = ("DOE^JANE", "Jane Doe", "MRN0048151623", "19471103", "ACC77120459",
               "Saint Nowhere", "HOUSE^GREGORY", "555-0199", "NURSE^RATCHED",
               "1.2.826.0.1.3680043.8.498")


def anatomy(h=96, w=80) -> np.ndarray:
  """A bone-bright toy radiograph: dark lungs, a brighter mediastinum, a rib."""
  y, x = np.mgrid[0:h, 0:w].astype(np.float32)
  img = 0.6 + 0.2 * np.sin(x / 9.0) * np.cos(y / 13.0)
  img[int(.2 * h):int(.73 * h), int(.12 * w):int(.37 * w)] = 0.25
  img[int(.2 * h):int(.73 * h), int(.62 * w):int(.87 * w)] = 0.3
  img[int(.42 * h):int(.48 * h), int(.06 * w):int(.94 * w)] += 0.3
  return np.clip(img, 0, 1)


def write_base(path, image=None, **kw) -> str:
  """A good 12-bit DX with the fake PHI of `PHI`."""
  write_dicom(path, anatomy() if image is None else image, bits_stored=12,
              header=dict(PHI), **kw)
  return os.fspath(path)


# ----------------------------------------------------------------- helpers


def _save(ds: Dataset, path: str, **kw) -> None:
  ds.save_as(path, enforce_file_format=True, **kw)


def _bone_bright(ds: Dataset) -> np.ndarray:
  """The base image as float in [0, 1], bone bright, at the stored shape."""
  values = ds.pixel_array.astype(np.float64)
  if ds.PhotometricInterpretation == "MONOCHROME1":
    values = values.max() - values
  return (values - values.min()) / max(values.max() - values.min(), 1)


def _plain(ds: Dataset) -> Dataset:
  """No rescale, no window: for variants that change the stored range."""
  for key in ("WindowCenter", "WindowWidth", "VOILUTFunction", "RescaleSlope",
              "RescaleIntercept", "RescaleType"):
    if key in ds:
      delattr(ds, key)
  return ds


def _pixels(ds: Dataset, arr: np.ndarray, bits: int, photometric="MONOCHROME2") -> Dataset:
  ds = _plain(ds)
  ds.set_pixel_data(arr, photometric, bits, generate_instance_uid=False)
  return ds


def _quantised(ds: Dataset, bits: int, dtype=np.uint16) -> np.ndarray:
  return np.round(_bone_bright(ds) * (2 ** bits - 1)).astype(dtype)


def _encapsulated(ds: Dataset, ts, frame: bytes) -> Dataset:
  ds.file_meta.TransferSyntaxUID = ts
  ds.PixelData = encapsulate([frame])
  ds["PixelData"].VR = "OB"
  ds["PixelData"].is_undefined_length = True
  return ds


def _fake_stream(marker: bytes) -> bytes:
  """A codestream start marker and made-up bytes: what a damaged file holds."""
  return marker + np.random.default_rng(1).integers(0, 256, 2000, np.uint8).tobytes()


def decoder_available(ts) -> bool:
  try:
    return get_decoder(ts).is_available
  except NotImplementedError:
    return False


def _encoder_available(ts) -> bool:
  try:
    return get_encoder(ts).is_available
  except NotImplementedError:
    return False


def _gdcm_available() -> bool:
  try:
    import gdcm  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    return True
  except ImportError:
    return False


def _pillow_codec(kind: str) -> bool:
  from PIL import features  # pylint: disable=import-outside-toplevel
  return bool(features.check(kind))


# ----------------------------------------------------------------- faults


@dataclasses.dataclass(frozen=True)
class Fault:
  name: str
  how: str                                   # how the file is made (docs)
  make: Callable[[Dataset, bytes, str], None]   # (base dataset, base bytes, path)
  expect: str | None | Callable[[], str | None] = None  # None: reads; else reason part
  same: bool = True                          # a read must give the base image back
  lossy: bool = False                        # ... up to lossy compression

  def expected(self) -> str | None:
    return self.expect() if callable(self.expect) else self.expect


def _write_bytes(data: bytes):
  return lambda ds, raw, path: open(path, "wb").write(data)  # noqa: SIM115


def _cut(fraction_of_header: float | None = None, fraction_of_pixels: float | None = None):
  def make(ds, raw, path):
    start = len(raw) - len(ds.PixelData)  # pixel data is the last element
    n = int(start * fraction_of_header) if fraction_of_pixels is None else (
        start + int(len(ds.PixelData) * fraction_of_pixels))
    with open(path, "wb") as f:
      f.write(raw[:n])
  return make


def _edit(fn: Callable[[Dataset], Dataset | None], **save):
  def make(ds, raw, path):
    out = fn(ds)
    _save(ds if out is None else out, path, **save)
  return make


def _raw_dataset(ds, raw, path):
  """No preamble, no File Meta: the dataset alone, implicit VR (old exports)."""
  from pydicom.filebase import DicomBytesIO  # pylint: disable=import-outside-toplevel
  from pydicom.filewriter import write_dataset  # pylint: disable=import-outside-toplevel
  fp = DicomBytesIO()
  fp.is_little_endian, fp.is_implicit_VR = True, True
  del ds.file_meta
  write_dataset(fp, ds)
  with open(path, "wb") as f:
    f.write(fp.getvalue())


def _no_transfer_syntax(ds, raw, path):
  del ds.file_meta.TransferSyntaxUID
  ds.save_as(path, enforce_file_format=False, implicit_vr=False, little_endian=True)


def _colour(grey: bool):
  def fn(ds):
    v = _quantised(ds, 8, np.uint8)
    rgb = np.stack([v, v, v], -1) if grey else np.stack([v, v[::-1], 255 - v], -1)
    ds = _plain(ds)
    ds.set_pixel_data(rgb, "RGB", 8, generate_instance_uid=False)
  return fn


def _palette(ds):
  _pixels(ds, _quantised(ds, 8, np.uint8), 8)
  ds.PhotometricInterpretation = "PALETTE COLOR"


def _bits(bits: int):
  def fn(ds):
    dtype = np.uint8 if bits <= 8 else np.uint16
    _pixels(ds, _quantised(ds, bits, dtype), bits)
  return fn


def _bits32(ds):
  v = _quantised(ds, 20, np.uint32) * 1000
  _plain(ds)
  ds.PhotometricInterpretation = "MONOCHROME2"  # _quantised is bone bright
  ds.BitsAllocated, ds.BitsStored, ds.HighBit = 32, 32, 31
  ds.PixelData = v.tobytes()


def _one_bit(ds):
  _pixels(ds, (_bone_bright(ds) > 0.5).astype(np.uint8), 1)


def _signed(bits: int, offset: int):
  def fn(ds):
    v = _quantised(ds, bits - 1, np.int16).astype(np.int32) * 2 - offset
    _pixels(ds, v.astype(np.int16), bits)
    ds.RescaleSlope, ds.RescaleIntercept = 1, 1024
  return fn


def _high_bits(ds):
  """Overlay bits left above BitsStored (retired practice): must be masked."""
  _pixels(ds, _quantised(ds, 12), 12)  # room above BitsStored, whatever the base
  v = ds.pixel_array | np.uint16(0xF000)
  ds.PixelData = v.astype(np.uint16).tobytes()


def _set(**attrs):
  def fn(ds):
    for key, value in attrs.items():
      if value is None:
        if key in ds:
          delattr(ds, key)
      else:
        setattr(ds, key, value)
  return fn


def _voi_sequence(ds):
  item = Dataset()
  top = int(ds.pixel_array.max())
  item.LUTDescriptor = [top + 1, 0, 16]
  item.LUTData = np.round(np.linspace(0, 65535, top + 1) ** 1.0).astype("<u2").tobytes()
  item.LUTExplanation = "linear"
  _plain(ds).VOILUTSequence = [item]


def _modality_lut_sequence(ds):
  _pixels(ds, _quantised(ds, 12), 12)  # x8 stays within the LUT's 16 bits
  item = Dataset()
  top = int(ds.pixel_array.max())
  item.LUTDescriptor = [top + 1, 0, 16]
  item.ModalityLUTType = "US"
  item.LUTData = (np.arange(top + 1) * 8).astype("<u2").tobytes()
  _plain(ds).ModalityLUTSequence = [item]


def tiff_preamble(width=80, height=96) -> bytes:
  """128 bytes holding a little-endian TIFF header and a first IFD (image width,
  length, bits per sample, photometric), as dual-personality DICOM+TIFF files
  written by some CR/DX readers have."""
  entries = [(256, 3, 1, width), (257, 3, 1, height), (258, 3, 1, 16), (262, 3, 1, 1)]
  ifd = struct.pack("<H", len(entries))
  for tag, kind, count, value in entries:
    ifd += struct.pack("<HHIHH", tag, kind, count, value, 0)
  data = b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0)
  return data.ljust(128, b"\x00")



def _tiff_preamble(ds, raw, path):
  """A dual-personality file: a TIFF header in the 128-byte preamble."""
  ds.preamble = tiff_preamble(int(ds.Columns), int(ds.Rows))
  _save(ds, path)


def _stored_inverted(ds):
  """Bone dark in MONOCHROME2 values, to be shown inverted (INVERSE)."""
  _pixels(ds, (2 ** 12 - 1 - _quantised(ds, 12)).astype(np.uint16), 12)
  ds.PresentationLUTShape = "INVERSE"


def _mono1(**attrs):
  """The base stored as MONOCHROME1 (bone dark) with `attrs` set or deleted."""
  def make(ds, raw, path):
    write_base(path, _bone_bright(ds), photometric="MONOCHROME1")
    out = pydicom.dcmread(path)
    _set(**attrs)(out)
    _save(out, path)
  return make


def _for_processing_class(ds):
  ds.SOPClassUID = uids.DigitalXRayImageStorageForProcessing
  ds.file_meta.MediaStorageSOPClassUID = uids.DigitalXRayImageStorageForProcessing


def _rows(factor):
  def fn(ds):
    ds.Rows = int(ds.Rows * factor)
  return fn


def _frames(ds):
  v = ds.pixel_array
  ds.NumberOfFrames = 2
  ds.PixelData = np.stack([v, v]).tobytes()


LARGE_SIDE = 2880


def _large(ds):
  """Upsampled by an integer factor to ~LARGE_SIDE pixels (landmarks scale alike)."""
  k = LARGE_SIDE // max(ds.Rows, ds.Columns)
  big = np.kron(_bone_bright(ds), np.ones((k, k)))
  _pixels(ds, np.round(big * 4095).astype(np.uint16), 12)


def _rle(ds):
  ds.compress(uids.RLELossless, generate_instance_uid=False)


def _jpeg_baseline(ds):
  from PIL import Image  # pylint: disable=import-outside-toplevel
  v = _quantised(ds, 8, np.uint8)
  _pixels(ds, v, 8)
  buf = io.BytesIO()
  Image.fromarray(v).save(buf, format="JPEG", quality=95)
  _encapsulated(ds, uids.JPEGBaseline8Bit, buf.getvalue())


def _j2k(ds):
  if _encoder_available(uids.JPEG2000Lossless):
    ds.compress(uids.JPEG2000Lossless, generate_instance_uid=False)
    return
  from PIL import Image  # pylint: disable=import-outside-toplevel
  buf = io.BytesIO()
  Image.fromarray(ds.pixel_array).save(buf, format="JPEG2000", no_jp2=True,
                                       irreversible=False)
  _encapsulated(ds, uids.JPEG2000Lossless, buf.getvalue())


def _jpeg_ls(ds):
  if _encoder_available(uids.JPEGLSLossless):
    ds.compress(uids.JPEGLSLossless, generate_instance_uid=False)
  else:
    _encapsulated(ds, uids.JPEGLSLossless, _fake_stream(b"\xff\xd8\xff\xf7"))


def _jpeg_lossless(ds, raw, path):
  if not _gdcm_available():
    _save(_encapsulated(ds, uids.JPEGLosslessSV1, _fake_stream(b"\xff\xd8\xff\xc3")), path)
    return
  import gdcm  # pylint: disable=import-outside-toplevel
  plain = path + ".plain"
  _save(ds, plain)
  reader = gdcm.ImageReader()
  reader.SetFileName(plain)
  assert reader.Read()
  change = gdcm.ImageChangeTransferSyntax()
  change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
  change.SetInput(reader.GetImage())
  assert change.Change()
  writer = gdcm.ImageWriter()
  writer.SetFileName(path)
  writer.SetFile(reader.GetFile())
  writer.SetImage(change.GetOutput())
  assert writer.Write()
  os.remove(plain)


def _htj2k(ds):
  _encapsulated(ds, uids.HTJ2KLossless, _fake_stream(b"\xff\x4f\xff\x51"))


def _damaged_j2k(ds):
  _encapsulated(ds, uids.JPEG2000Lossless, _fake_stream(b"\xff\x4f\xff\x51"))


NO_DECODER = "no decoder for it is installed: pip install 'bmdjax[dicom-codecs]'"


def _compressed(ts, real: Callable[[], bool]):
  """Reads when a decoder is there and the file is real; else the refusal."""
  def expect():
    if not decoder_available(ts):
      return NO_DECODER
    return None if real() else "pixel data cannot be decoded"
  return expect


FAULTS = (
    # --- the file itself
    Fault("empty", "0-byte file", _write_bytes(b""), "file is empty (0 bytes)"),
    Fault("too short", "first 100 bytes of a good file", lambda ds, raw, p: _write_bytes(
        raw[:100])(ds, raw, p), "too short for DICOM"),
    Fault("truncated header", "cut halfway through the header",
          _cut(fraction_of_header=0.5), "file is truncated or damaged before the pixel data"),
    Fault("truncated pixels", "cut halfway through the pixel data",
          _cut(fraction_of_pixels=0.5), "file is truncated: the pixel data is incomplete"),
    Fault("text", "a CSV saved as .dcm", _write_bytes(b"patient_id,notes\nP1,see PACS\n" * 20),
          "not a readable DICOM file: it holds text"),
    Fault("PNG", "a PNG image saved as .dcm", lambda ds, raw, p: _png(ds, p),
          "not a readable DICOM file: it is a PNG image"),
    Fault("PDF", "a PDF report saved as .dcm", _write_bytes(b"%PDF-1.4\n" + bytes(300)),
          "not a readable DICOM file: it is a PDF document"),
    Fault("binary junk", "300 random bytes", _write_bytes(
        np.random.default_rng(0).integers(1, 256, 300, np.uint8).tobytes()),
          "no 'DICM' marker at byte 128"),
    Fault("folder", "a folder named like a study", lambda ds, raw, p: os.makedirs(p),
          "is a folder, not a DICOM file"),
    Fault("no preamble", "dataset without preamble or File Meta (implicit VR)",
          _raw_dataset),
    Fault("no transfer syntax", "File Meta without TransferSyntaxUID", _no_transfer_syntax),
    Fault("TIFF preamble", "dual-personality file: a TIFF header in the 128-byte preamble",
          _tiff_preamble),
    # --- what the file holds
    Fault("no pixel data", "PixelData removed", _edit(_set(PixelData=None)),
          "no pixel data in the file"),
    Fault("structured report", "Modality SR, no pixel data",
          _edit(_set(Modality="SR", PixelData=None)), "no pixel data in the file"),
    *(Fault(f"modality {m}", f"Modality {m}", _edit(_set(Modality=m)),
            f"modality {m} is not a radiograph") for m in ("CT", "MR", "OT")),
    *(Fault(f"view {v}", f"ViewPosition {v}", _edit(_set(ViewPosition=v)),
            f"view position {v} is not frontal") for v in ("LL", "RL", "RLD")),
    Fault("no modality or view", "Modality and ViewPosition removed",
          _edit(_set(Modality=None, ViewPosition=None))),
    Fault("colour", "true-colour RGB (channels differ)", _edit(_colour(grey=False)),
          "colour image (RGB) with real colour content"),
    Fault("grey as RGB", "greyscale stored as RGB (equal channels)", _edit(_colour(grey=True))),
    Fault("palette colour", "PhotometricInterpretation PALETTE COLOR",
          _edit(_palette), "photometric interpretation PALETTE COLOR"),
    Fault("no photometric", "PhotometricInterpretation removed",
          _edit(_set(PhotometricInterpretation=None)), "no PhotometricInterpretation"),
    Fault("MONOCHROME1", "stored inverted (bone dark), MONOCHROME1",
          lambda ds, raw, p: write_base(p, _bone_bright(ds), photometric="MONOCHROME1")),
    Fault("Presentation LUT INVERSE", "stored bone dark, MONOCHROME2 + Presentation LUT "
          "Shape INVERSE", _edit(_stored_inverted)),
    Fault("MONOCHROME1 + INVERSE", "MONOCHROME1 + Presentation LUT Shape INVERSE (as the DX "
          "module requires)", _mono1(PresentationLUTShape="INVERSE")),
    Fault("MONOCHROME1 + IDENTITY, sign +1", "MONOCHROME1 + IDENTITY, Pixel Intensity "
          "Relationship Sign +1", _mono1(PresentationLUTShape="IDENTITY")),
    Fault("MONOCHROME1 + IDENTITY", "MONOCHROME1 + IDENTITY, no Pixel Intensity "
          "Relationship Sign: the anatomy settles the polarity (mediastinum brighter "
          "than the lungs)", _mono1(PresentationLUTShape="IDENTITY",
                                    PixelIntensityRelationshipSign=None)),
    Fault("FOR PROCESSING", "Presentation Intent Type FOR PROCESSING (raw detector image)",
          _edit(_set(PresentationIntentType="FOR PROCESSING")), "a FOR PROCESSING image"),
    Fault("DX For Processing SOP class", "SOP Class Digital X-Ray Image Storage - For "
          "Processing", _edit(_for_processing_class), "a FOR PROCESSING image"),
    Fault("no Rows", "Rows removed", _edit(_set(Rows=None)), "header lacks Rows"),
    Fault("Rows too large", "Rows doubled, pixel data unchanged", _edit(_rows(2)),
          "pixel data cannot be read"),
    Fault("huge image", "header says 30000 x 30000 pixels",
          _edit(_set(Rows=30000, Columns=30000)), "over the limit of 50 megapixels"),
    Fault("multi-frame", "NumberOfFrames 2", _edit(_frames), "2 frames in one file"),
    Fault("constant", "every pixel the same",
          lambda ds, raw, p: write_base(p, np.full((64, 64), 0.5)), "no contrast", same=False),
    # --- pixel encodings
    *(Fault(f"{b}-bit", f"BitsStored {b}, BitsAllocated {8 if b == 8 else 16}",
            _edit(_bits(b))) for b in (8, 10, 12, 14, 16)),
    Fault("32-bit", "BitsAllocated 32", _edit(_bits32)),
    Fault("1-bit", "BitsAllocated 1 (a mask)", _edit(_one_bit), "1-bit pixels"),
    Fault("signed 16-bit", "PixelRepresentation 1, values -32767..32767",
          _edit(_signed(16, 32767))),
    Fault("signed 12-bit", "PixelRepresentation 1, 12 of 16 bits (sign extension)",
          _edit(_signed(12, 2047))),
    Fault("overlay bits", "bits above BitsStored set (old overlays)", _edit(_high_bits)),
    Fault("large image", "upsampled to 2880 pixels on the long side", _edit(_large)),
    Fault("invalid pixel spacing", "PixelSpacing 0\\0, no ImagerPixelSpacing (spacing "
          "estimated from the landmarks in prep and predict)",
          _edit(_set(PixelSpacing=[0, 0], ImagerPixelSpacing=None))),
    Fault("zero spacing, imager spacing", "PixelSpacing 0.000\\0.000, ImagerPixelSpacing "
          "given", _edit(_set(PixelSpacing=["0.000", "0.000"]))),
    Fault("no spacing", "PixelSpacing and ImagerPixelSpacing removed",
          _edit(_set(PixelSpacing=None, ImagerPixelSpacing=None))),
    # --- rescale and VOI LUT
    Fault("rescale", "RescaleSlope 0.25, RescaleIntercept -1024",
          _edit(_set(RescaleSlope=0.25, RescaleIntercept=-1024, WindowCenter=None,
                     WindowWidth=None))),
    Fault("rescale slope 0", "RescaleSlope 0", _edit(_set(RescaleSlope=0)), "no contrast",
          same=False),
    Fault("modality LUT sequence", "ModalityLUTSequence instead of rescale",
          _edit(_modality_lut_sequence)),
    Fault("VOI LUT sequence", "VOILUTSequence instead of a window", _edit(_voi_sequence)),
    Fault("two windows", "WindowCenter/Width with two values each", _edit(
        lambda ds: _set(WindowCenter=[ds.WindowCenter, 100],
                        WindowWidth=[ds.WindowWidth, 50])(ds))),
    Fault("sigmoid window", "VOILUTFunction SIGMOID (changes contrast, as it should)",
          _edit(_set(VOILUTFunction="SIGMOID")), same=False),
    Fault("invalid window", "WindowWidth 0", _edit(_set(WindowWidth=0))),
    Fault("no window", "WindowCenter/Width removed",
          _edit(_set(WindowCenter=None, WindowWidth=None))),
    # --- transfer syntaxes
    Fault("implicit VR", "Implicit VR Little Endian",
          _edit(lambda ds: setattr(ds.file_meta, "TransferSyntaxUID",
                                   uids.ImplicitVRLittleEndian))),
    Fault("deflated", "Deflated Explicit VR Little Endian", _edit(
        lambda ds: setattr(ds.file_meta, "TransferSyntaxUID",
                           uids.DeflatedExplicitVRLittleEndian))),
    Fault("RLE", "RLE Lossless (pydicom encodes and decodes it)", _edit(_rle)),
    Fault("JPEG baseline", "JPEG Baseline 8-bit, quality 95 (Pillow)", _edit(_jpeg_baseline),
          _compressed(uids.JPEGBaseline8Bit, lambda: True), lossy=True),
    Fault("JPEG 2000", "JPEG 2000 Lossless (pylibjpeg-openjpeg, else Pillow)", _edit(_j2k),
          _compressed(uids.JPEG2000Lossless, lambda: True)),
    Fault("JPEG-LS", "JPEG-LS Lossless (pyjpegls, else made-up bytes)", _edit(_jpeg_ls),
          _compressed(uids.JPEGLSLossless, lambda: _encoder_available(uids.JPEGLSLossless))),
    Fault("JPEG lossless", "JPEG Lossless SV1 (python-gdcm, else made-up bytes)",
          _jpeg_lossless, _compressed(uids.JPEGLosslessSV1, _gdcm_available)),
    Fault("HTJ2K", "HTJ2K Lossless around made-up bytes", _edit(_htj2k),
          _compressed(uids.HTJ2KLossless, lambda: False)),
    Fault("damaged JPEG 2000", "JPEG 2000 transfer syntax around made-up bytes",
          _edit(_damaged_j2k), _compressed(uids.JPEG2000Lossless, lambda: False)),
    Fault("MPEG-2", "MPEG2 video transfer syntax", _edit(lambda ds: _encapsulated(
        ds, uids.MPEG2MPML, _fake_stream(b"\x00\x00\x01\xb3"))), "which no DICOM image "
          "decoder supports"),
    Fault("unknown transfer syntax", "TransferSyntaxUID 1.2.3.4", _edit(
        lambda ds: setattr(ds.file_meta, "TransferSyntaxUID", "1.2.3.4")),
          "unknown transfer syntax 1.2.3.4"),
)


def _png(ds, path):
  from PIL import Image  # pylint: disable=import-outside-toplevel
  Image.fromarray(_quantised(ds, 8, np.uint8)).save(path, format="PNG")


def make(fault: Fault, base: str, path: str) -> str:
  """Writes `fault` applied to the good DICOM `base` at `path`."""
  raw = open(base, "rb").read()  # noqa: SIM115
  ds = copy.deepcopy(pydicom.dcmread(base))
  fault.make(ds, raw, os.fspath(path))
  return os.fspath(path)


def outcome(path: str) -> str:
  """'read' or 'refused: <reason>'."""
  try:
    dicom_io.read_radiograph(path)
  except dicom_io.StudyError as e:
    return f"refused: {e.reason}"
  return "read"


def table(folder: str) -> str:
  """The markdown table of docs/faults.md, from running every fault."""
  os.makedirs(folder, exist_ok=True)
  base = write_base(os.path.join(folder, "base.dcm"))
  lines = ["| fault | how the file is made | outcome |", "|---|---|---|"]
  for i, fault in enumerate(FAULTS):
    path = make(fault, base, os.path.join(folder, f"f{i:02d}.dcm"))
    result = outcome(path).replace(path + ": ", "").replace("|", "\\|")
    lines.append(f"| {fault.name} | {fault.how} | {result} |")
  return "\n".join(lines)


if __name__ == "__main__":
  import tempfile  # pylint: disable=import-outside-toplevel
  with tempfile.TemporaryDirectory() as tmp:
    print(table(sys.argv[1] if len(sys.argv) > 1 else tmp))
