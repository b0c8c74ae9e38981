"""The annotation CSV: one row per reviewed study, written atomically.

Layout: the landmarks.csv columns (image,x0,y0,...,x15,y15, so the file is a
valid --landmarks for data_prep.build and build_landmarks) followed by
status (accepted | unusable), reason (why unusable), flags (checks that
still failed when accepted), width, height, revision and updated (UTC).
An unusable study has empty coordinates; data prep skips it, with a reason.

Every save re-reads the file under a lock (a thread lock, and flock on
OUT.lock across processes), changes one row and replaces the file by rename,
so a crash leaves either the old or the new file, and two browser tabs (or
two servers) saving different studies never lose each other's rows. A save
names the revision of the row it was based on; if the row changed since (the
same study saved in another tab), the save is refused with `Conflict`.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import fcntl
import math
import os
import tempfile
import threading

from data_prep import rois

COORDS = tuple(f"{a}{i}" for i in range(rois.NUM_LANDMARKS) for a in "xy")
COLUMNS = ("image", *COORDS, "status", "reason", "flags", "width", "height", "revision",
           "updated")
STATUSES = ("accepted", "unusable")


class Conflict(Exception):
  """The row changed since the client loaded it."""

  def __init__(self, row: dict):
    self.row = row
    super().__init__(f"{row['image']} was saved elsewhere (revision {row['revision']})")


def format_coord(v: float) -> str:
  """Shortest text that reads back as the same float (CSV <-> COCO exact)."""
  return "" if v is None or not math.isfinite(v) else repr(float(v))


def read_rows(path: str) -> dict[str, dict]:
  """image -> row (strings, as in the file); {} when the file does not exist."""
  if not os.path.exists(path):
    return {}
  with open(path, newline="") as f:
    reader = csv.DictReader(f)
    missing = [c for c in ("image", *COORDS) if c not in (reader.fieldnames or [])]
    if missing:
      raise ValueError(f"{path}: missing column(s) {', '.join(missing[:4])}; is it a "
                       "landmarks CSV (image,x0,y0,...,x15,y15)?")
    return {r["image"]: {c: r.get(c) or "" for c in COLUMNS} for r in reader}


def write_rows(path: str, rows: dict[str, dict]) -> None:
  """Writes `rows` to `path` atomically (temporary file in the same folder, fsync,
  rename)."""
  folder = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(prefix=".annotations-", suffix=".csv", dir=folder)
  try:
    with os.fdopen(fd, "w", newline="") as f:
      writer = csv.DictWriter(f, fieldnames=COLUMNS)
      writer.writeheader()
      for image in sorted(rows):
        writer.writerow({c: rows[image].get(c, "") for c in COLUMNS})
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)
    raise


def landmarks_of(row: dict):
  """[16][2] floats of a row, or None when any coordinate is empty."""
  try:
    values = [float(row[c]) for c in COORDS]
  except (TypeError, ValueError):
    return None
  return [[values[2 * i], values[2 * i + 1]] for i in range(rois.NUM_LANDMARKS)]


class AnnotationStore:
  """The --out CSV of one annotation session (module docstring)."""

  def __init__(self, path: str):
    self.path = os.path.abspath(path)
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    self._lock = threading.Lock()
    self.rows = read_rows(self.path)  # also checks the layout of an existing file

  @contextlib.contextmanager
  def _locked(self):
    with self._lock, open(self.path + ".lock", "a") as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)
      try:
        yield
      finally:
        fcntl.flock(lock, fcntl.LOCK_UN)

  def refresh(self) -> dict[str, dict]:
    with self._locked():
      self.rows = read_rows(self.path)
      return dict(self.rows)

  def get(self, image: str) -> dict | None:
    return self.refresh().get(image)

  def save(self, image: str, *, status: str, landmarks=None, reason: str = "",
           flags=(), shape=None, base_revision: int | None = None) -> dict:
    """Writes one study's row; returns it. `base_revision`: the revision the
    client started from (0: none saved); None skips the conflict check."""
    if status not in STATUSES:
      raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    if status == "unusable" and not reason.strip():
      raise ValueError("a study marked unusable needs a reason")
    if status == "accepted":
      if landmarks is None or len(landmarks) != rois.NUM_LANDMARKS or not all(
          len(p) == 2 and all(math.isfinite(float(v)) for v in p) for p in landmarks):
        raise ValueError(f"{image}: accepting needs 16 finite (x, y) points")
    with self._locked():
      self.rows = read_rows(self.path)
      old = self.rows.get(image)
      revision = int(old["revision"] or 0) if old else 0
      if base_revision is not None and int(base_revision) != revision:
        raise Conflict(old)
      row = {"image": image, "status": status, "reason": reason.strip(),
             "flags": "; ".join(flags), "revision": str(revision + 1),
             "updated": datetime.datetime.now(datetime.timezone.utc).isoformat(
                 timespec="seconds")}
      if shape is not None:
        row["height"], row["width"] = str(int(shape[0])), str(int(shape[1]))
      for i in range(rois.NUM_LANDMARKS):
        x, y = (landmarks[i] if status == "accepted" else (None, None))
        row[f"x{i}"] = format_coord(None if x is None else float(x))
        row[f"y{i}"] = format_coord(None if y is None else float(y))
      self.rows[image] = row
      write_rows(self.path, self.rows)
      return dict(row)
