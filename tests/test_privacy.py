"""No DICOM PHI in anything the pipeline writes.

The synthetic cohort's headers carry fake PHI (names, MRNs, birth dates, UIDs,
institution, accession numbers, referring physicians, free text). This test
collects those values from the DICOM files themselves, then scans the bytes of
everything written by data prep, training, evaluation and screening for them.
Positive controls (the pseudonymous ids, which must be there) show that the
scan can see inside each kind of file.
"""

import json
import os
import re

import pydicom
import pytest

from bmdjax import dicom_sr, evaluation, prediction

# Free-text and identifying elements of a radiograph header.
PHI_FIELDS = ("PatientName", "PatientID", "OtherPatientIDs", "PatientBirthDate",
              "PatientAddress", "PatientTelephoneNumbers", "StudyInstanceUID",
              "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID",
              "InstitutionName", "InstitutionAddress", "StationName", "AccessionNumber",
              "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName",
              "StudyDescription", "SeriesDescription", "ImageComments", "StudyID",
              "StudyDate", "SeriesDate", "ContentDate", "AcquisitionDate")
MIN_RAW = 6  # shorter strings (name parts) are matched as words in text files only


def _date_forms(value: str) -> set:
  forms = {value}
  if re.fullmatch(r"\d{8}", value):
    y, m, d = value[:4], value[4:6], value[6:]
    forms |= {f"{y}-{m}-{d}", f"{d}.{m}.{y}", f"{m}/{d}/{y}"}
  return forms


def collect_phi(dicom_dir) -> set:
  """Every PHI value of every header in `dicom_dir`, with name parts and the
  usual spellings of dates."""
  found = set()
  for name in os.listdir(dicom_dir):
    ds = pydicom.dcmread(os.path.join(dicom_dir, name), stop_before_pixels=True)
    for field in PHI_FIELDS:
      value = ds.get(field)
      if value in (None, ""):
        continue
      text = str(value).strip()
      if field in ("StudyID", "SeriesDescription"):  # short counters / "CHEST PA"
        continue
      if field.endswith("Date") and field != "PatientBirthDate":
        found.add(text)  # study dates as stored; reformatted forms are too common
      else:
        found |= _date_forms(text)
      if ds.data_element(field).VR == "PN":
        parts = [p.strip(". ") for p in re.split(r"[\^ ]", text)]
        found |= {p for p in parts if len(p) >= 3 and p.isalpha() and p != "Dr"}
        found |= {" ".join(reversed(parts[:2])).title(), ", ".join(parts[:2]).title()}
    found.add(ds.file_meta.MediaStorageSOPInstanceUID)
  return {s for s in found if s}


def _pattern(s: str) -> re.Pattern:
  """`s` not inside a longer word or number (a date inside a float is no leak)."""
  return re.compile(rb"(?<![0-9A-Za-z])" + re.escape(s.encode()) + rb"(?![0-9A-Za-z])",
                    re.IGNORECASE)


def _found(needle: bytes, pattern: re.Pattern, data: bytes, lower: bytes) -> bool:
  """A fast substring test first; the word-boundary regex only on a hit."""
  return needle in lower and bool(pattern.search(data))


def scan(roots, phi: set, skip=lambda path: False) -> list:
  """[(file, PHI string)] for every hit in the files and file names under roots
  (files for which `skip(path)` holds are left out)."""
  long = [(s, s.lower().encode(), _pattern(s)) for s in phi if len(s) >= MIN_RAW]
  short = [(s, s.lower().encode(), _pattern(s)) for s in phi if len(s) < MIN_RAW]
  hits = []
  for root in roots:
    for folder, _, files in os.walk(root):
      for name in files:
        path = os.path.join(folder, name)
        if skip(path):
          continue
        rel = os.path.relpath(path, root).encode()
        data = open(path, "rb").read()
        try:
          data.decode("utf-8")
          text = True
        except UnicodeDecodeError:
          text = False
        lower, rel_lower = data.lower(), rel.lower()
        for s, needle, pattern in long + (short if text else []):
          if _found(needle, pattern, data, lower):
            hits.append((path, s))
        for s, needle, pattern in long + short:
          if _found(needle, pattern, rel, rel_lower):
            hits.append((path + " (file name)", s))
  return hits


@pytest.fixture(scope="module")
def phi(cohort_dir):
  values = collect_phi(cohort_dir / "dicom")
  # The cohort does carry PHI of every kind the test looks for.
  assert any(v.startswith("MRN") for v in values)
  assert any("^" in v for v in values) and any(len(v) > 40 for v in values)
  return values


@pytest.fixture(scope="module")
def outputs(prepared_dir, tiny_run, cohort_dir, tmp_path_factory):
  """Everything data prep, training, evaluation and screening wrote."""
  config, workdir, _ = tiny_run
  out = tmp_path_factory.mktemp("privacy")
  evaluation.evaluate(config, str(workdir), split="test", out_dir=str(out / "report"),
                      bootstrap=10)
  studies = sorted(os.listdir(cohort_dir / "dicom"))[:2]
  results = prediction.predict_studies(
      str(workdir), [str(cohort_dir / "dicom" / s) for s in studies],
      landmarks=str(cohort_dir / "landmarks.csv"), out_dir=str(out / "predict"),
      sr=True, fhir_json=True)
  assert all(r["status"] == "ok" for r in results), results
  (out / "predict" / "results.json").write_text(json.dumps(results))
  (out / "predict" / "table.txt").write_text(prediction.format_table(results))
  return {"prep": prepared_dir, "train": workdir, "report": out / "report",
          "predict": out / "predict"}


def _is_sr(path: str) -> bool:
  return path.endswith("_sr.dcm")


@pytest.mark.parametrize("stage", ["prep", "train", "report", "predict"])
def test_outputs_carry_no_phi(stage, outputs, phi):
  """Everything but the DICOM SRs (which must identify their image, below)."""
  hits = scan([outputs[stage]], phi, skip=_is_sr)
  assert not hits, f"PHI written by {stage}: {hits[:10]}"
  if stage == "predict":  # the FHIR bundles and overlays were scanned too
    names = os.listdir(outputs[stage])
    assert any(n.endswith("_fhir.json") for n in names)
    assert any(n.endswith(".png") for n in names)


def test_sr_carries_exactly_the_fields_that_reference_its_image(outputs, phi, cohort_dir):
  """An SR holds the source's SR_COPIED_FIELDS and the image reference (SOP
  Class/Instance, Series UIDs) and no other PHI of any study."""
  srs = [os.path.join(outputs["predict"], n) for n in os.listdir(outputs["predict"])
         if _is_sr(n)]
  assert len(srs) == 2
  for path in srs:
    stem = os.path.basename(path)[:-len("_sr.dcm")]
    src = pydicom.dcmread(cohort_dir / "dicom" / f"{stem}.dcm", stop_before_pixels=True)
    allowed = set()
    for field in dicom_sr.SR_COPIED_FIELDS + ("SOPInstanceUID", "SeriesInstanceUID"):
      value = str(src.get(field, "")).strip()
      if value:
        allowed.add(value)
        if src.data_element(field).VR == "PN":  # its parts and spellings
          allowed |= {p for p in phi if p.lower() in value.lower()}
    allowed.add(src.file_meta.MediaStorageSOPInstanceUID)
    hits = [(f, s) for f, s in scan([os.path.dirname(path)], phi - allowed,
                                    skip=lambda p, keep=path: p != keep)]
    assert not hits, f"PHI in the SR beyond what references its image: {hits[:10]}"
    # Positive control: the identifying fields it must carry are there.
    copied = {str(src.PatientID), str(src.SOPInstanceUID), str(src.StudyInstanceUID)}
    found = {s for _, s in scan([os.path.dirname(path)], copied,
                                skip=lambda p, keep=path: p != keep)}
    assert found == copied


def test_scan_sees_inside_shards_and_reports(outputs, cohort_dir):
  """Positive control: the pseudonymous ids, stored on purpose, are found."""
  import pandas as pd  # pylint: disable=import-outside-toplevel
  labels = pd.read_csv(cohort_dir / "labels.csv")
  ids = set(labels.patient_id)
  shards = [os.path.join(f, n) for f, _, ns in os.walk(outputs["prep"]) for n in ns
            if "array_record" in n]
  assert shards and any(scan([os.path.dirname(shards[0])], ids))
  assert scan([outputs["report"]], ids)
  assert scan([outputs["predict"]], {os.path.splitext(sorted(labels.image)[0])[0]})


def test_cohort_file_names_carry_no_phi(cohort_dir, phi):
  names = [n.encode() for _, dirs, files in os.walk(cohort_dir) for n in dirs + files]
  leaked = [(n, s) for n in names for s in phi
            if _found(s.lower().encode(), _pattern(s), n, n.lower())]
  assert not leaked


def test_scan_finds_planted_phi(tmp_path, phi):
  """The scan is not blind: PHI planted in a binary and a text file is found."""
  mrn = next(v for v in phi if v.startswith("MRN"))
  name = next(v for v in phi if v.isalpha() and len(v) < MIN_RAW)
  (tmp_path / "blob.bin").write_bytes(b"\x00\xff" * 50 + mrn.encode() + b"\x00\xfe")
  (tmp_path / "notes.csv").write_text(f"id,comment\n1,seen by {name.lower()}\n")
  hits = scan([tmp_path], phi)
  assert (str(tmp_path / "blob.bin"), mrn) in hits
  assert (str(tmp_path / "notes.csv"), name) in hits
