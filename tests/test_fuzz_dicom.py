"""Fuzzing the reader with mutated DICOM bytes (fixed seed).

Whatever the damage, read_radiograph must either give a finite image in [0, 1]
or raise StudyError (never another exception type, never hang), and its
message must not quote the header's PHI.
"""

import signal

import numpy as np
import pydicom
import pytest

from data_prep import dicom_io
from tests import faults

CASES = 160
SECONDS_PER_CASE = 10
# Explicit VR with a 4-byte length (2 reserved bytes before it).
LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"}


class _Hang(BaseException):
  """Not an Exception, so the reader's catch-all cannot swallow it."""


def _elements(path):
  """(header offset, VR, value offset, value length) of every top-level element."""
  ds = pydicom.dcmread(path)
  out = []
  for elem in ds._dict.values():  # raw (not yet converted) elements keep their offsets
    long = elem.VR in LONG_VRS
    out.append((elem.value_tell - (12 if long else 8), elem.VR, elem.value_tell,
                elem.length, long))
  return out


def _mutate(raw: bytes, elements, rng) -> tuple[str, bytes]:
  data = bytearray(raw)
  header_end = max(e[0] for e in elements if e[1] not in ("OB", "OW") or e[3] < 4096)
  kind = rng.choice(["truncate", "flip", "length", "vr", "value", "tag", "splice"])
  if kind == "truncate":
    return kind, bytes(data[:int(rng.integers(0, len(data)))])
  if kind == "flip":  # mostly in the header, where bytes have meaning
    top = header_end if rng.random() < 0.8 else len(data)
    for pos in rng.integers(0, top, size=int(rng.integers(1, 9))):
      data[pos] = int(rng.integers(0, 256))
    return kind, bytes(data)
  start, vr, value_at, length, long = elements[int(rng.integers(len(elements)))]
  if kind == "length":
    size = 4 if long else 2
    choice = rng.choice([0, 1, 2 ** (8 * size) - 1, int(rng.integers(0, 2 ** (8 * size)))])
    data[value_at - size:value_at] = int(choice).to_bytes(size, "little")
  elif kind == "vr":
    data[start + 4:start + 6] = bytes(rng.choice(
        [list(b"SQ"), list(b"OB"), list(b"UN"), list(b"XX"), list(rng.integers(0, 256, 2))]))
  elif kind == "value" and length:
    n = min(length, 64)
    data[value_at:value_at + n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
  elif kind == "tag":
    data[start:start + 4] = rng.integers(0, 256, 4, dtype=np.uint8).tobytes()
  else:  # splice: bytes inserted into or cut out of the header
    pos = int(rng.integers(132, header_end))
    if rng.random() < 0.5:
      data[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 16)), dtype=np.uint8).tobytes()
    else:
      del data[pos:pos + int(rng.integers(1, 16))]
  return kind, bytes(data)


@pytest.fixture(scope="module")
def mutations(tmp_path_factory):
  folder = tmp_path_factory.mktemp("fuzz")
  base = faults.write_base(folder / "base.dcm")
  raw = open(base, "rb").read()
  elements = _elements(base)
  rng = np.random.default_rng(20240611)
  cases = []
  for i in range(CASES):
    kind, data = _mutate(raw, elements, rng)
    path = folder / f"m{i:03d}_{kind}.dcm"
    path.write_bytes(data)
    cases.append(str(path))
  return cases


def _on_alarm(signum, frame):
  raise _Hang()


def test_mutated_files_are_read_or_refused(mutations):
  previous = signal.signal(signal.SIGALRM, _on_alarm)
  outcomes = {"read": 0, "refused": 0}
  try:
    for path in mutations:
      signal.alarm(SECONDS_PER_CASE)
      try:
        image = dicom_io.read_radiograph(path).image
      except dicom_io.StudyError as e:
        assert e.path == path and str(e).startswith(path + ": ") and e.reason
        leaked = [s for s in faults.PHI_STRINGS if s.lower() in str(e).lower()]
        assert not leaked, (path, str(e))
        outcomes["refused"] += 1
      except _Hang:
        pytest.fail(f"{path}: reading took over {SECONDS_PER_CASE} s")
      else:
        assert image.dtype == np.float32 and image.ndim == 2, path
        assert np.isfinite(image).all() and 0 <= image.min() <= image.max() <= 1, path
        outcomes["read"] += 1
      finally:
        signal.alarm(0)
  finally:
    signal.signal(signal.SIGALRM, previous)
  # Both outcomes occur, so the mutations neither all break nor all miss the file.
  assert outcomes["read"] > 10 and outcomes["refused"] > 10, outcomes
