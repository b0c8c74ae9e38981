"""A screening result as a DICOM Structured Report a PACS can store and show.

TID 1500 Measurement Report (Comprehensive 3D SR, built with highdicom):
one measurement group per vertebra and one for L1-L4, each with the
predicted BMD (LOINC 38263-6, g/cm2) and T-score (LOINC 38267-7), the
prediction interval as TID 310 lower/upper measurement uncertainty, the
finding site (SNOMED CT vertebra codes of DICOM CID 7603), the method
"estimated from a chest radiograph by a model, not a DXA measurement", the
algorithm identification (bmdjax, version, run) and a reference to the source
image (SOP Class and Instance UID). The L1-L4 group adds the predicted WHO
category and the screening decision; planar ROI groups give the 14 bone ROI
boxes the model read (built from the 16 landmarks), as closed polylines on
the source image.

Privacy: highdicom copies the patient and study modules of the source
header; of those, the SR keeps exactly SR_COPIED_FIELDS (what a PACS needs to
file the report with its image: patient identity, study, accession) and
empties every other one. The SR's study, series and instance are those of the
source study; the SR itself gets new series and instance UIDs.
"""

from __future__ import annotations

import importlib.metadata

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from bmdjax import lumbar
from data_prep import rois

# Header fields copied from the source image: those a PACS needs to file the
# SR with the patient, study and image it describes. Everything else of the
# patient and study modules is left empty (Type 2) or absent.
SR_COPIED_FIELDS = ("PatientName", "PatientID", "PatientSex", "StudyInstanceUID",
                    "AccessionNumber")
_EMPTIED_FIELDS = ("PatientBirthDate", "StudyDate", "StudyTime", "ReferringPhysicianName",
                   "StudyID", "IssuerOfPatientID", "PatientAge", "PatientWeight",
                   "PatientSize", "OtherPatientIDs", "StudyDescription",
                   "InstitutionName", "InstitutionAddress")

BMD_CODE = hd.sr.CodedConcept("38263-6", "LN", "DXA Lumbar spine [Mass/Area] Bone density")
T_SCORE_CODE = hd.sr.CodedConcept("38267-7", "LN", "DXA Lumbar spine [T-score] Bone density")
G_PER_CM2 = hd.sr.CodedConcept("g/cm2", "UCUM", "gram per square centimeter")
T_UNIT = hd.sr.CodedConcept("{T-score}", "UCUM", "T-score")
VERTEBRA_CODES = {  # DICOM CID 7603 (SNOMED CT)
    "L1": hd.sr.CodedConcept("66794005", "SCT", "L1 vertebra"),
    "L2": hd.sr.CodedConcept("14293000", "SCT", "L2 vertebra"),
    "L3": hd.sr.CodedConcept("36470004", "SCT", "L3 vertebra"),
    "L4": hd.sr.CodedConcept("11994002", "SCT", "L4 vertebra"),
    lumbar.LUMBAR: hd.sr.CodedConcept("122496007", "SCT", "Lumbar spine"),
}
CATEGORY_CODES = {
    "normal": hd.sr.CodedConcept("17621005", "SCT", "Normal"),
    "osteopenia": hd.sr.CodedConcept("312894000", "SCT", "Osteopenia"),
    "osteoporosis": hd.sr.CodedConcept("64859006", "SCT", "Osteoporosis"),
}
# Local codes (coding scheme 99BMDJAX) where no standard concept says it.
METHOD = hd.sr.CodedConcept("CXR-MODEL", "99BMDJAX",
                            "Predicted from chest radiograph by model; not a DXA measurement")
WHO_CATEGORY = hd.sr.CodedConcept("WHO-CAT", "99BMDJAX", "Predicted WHO category (L1-L4)")
REFER = hd.sr.CodedConcept("REFER-DXA", "99BMDJAX", "Screening: refer for DXA")


def _version() -> str:
  try:
    return importlib.metadata.version("bmdjax")
  except importlib.metadata.PackageNotFoundError:
    return "unknown"


def _algorithm(runs) -> hd.sr.AlgorithmIdentification:
  return hd.sr.AlgorithmIdentification(name="bmdjax", version=_version(),
                                       parameters=list(runs))


def _measurement(name, value, unit, interval, site, image_ref, algorithm):
  props = None
  if interval:
    props = hd.sr.MeasurementProperties(upper_measurement_uncertainty=float(interval[1] - value),
                                        lower_measurement_uncertainty=float(value - interval[0]))
  return hd.sr.Measurement(name=name, value=float(value), unit=unit, method=METHOD,
                           finding_sites=[hd.sr.FindingSite(site)], properties=props,
                           referenced_images=[image_ref], algorithm_id=algorithm)


def build(result: dict, source: pydicom.Dataset, landmarks: np.ndarray,
          runs) -> hd.sr.Comprehensive3DSR:
  """The SR dataset of one prediction.predict_studies result ("ok") on `source`; `runs`
  names the model runs (algorithm parameters)."""
  algorithm = _algorithm(runs)
  image_ref = hd.sr.SourceImageForMeasurement(source.SOPClassUID, source.SOPInstanceUID)
  region_ref = hd.sr.SourceImageForRegion(source.SOPClassUID, source.SOPInstanceUID)
  intervals = result.get("intervals") or {}
  lum = result.get("lumbar") or {}
  values = [(v, b, result["t_score"].get(v)) for v, b in result["bmd"].items()]
  if lum.get("bmd") is not None:
    values.append((lumbar.LUMBAR, lum["bmd"], lum["t_score"]))
  groups = []
  for v, b, t in values:
    iv = intervals.get(v, {})
    ms = [_measurement(BMD_CODE, b, G_PER_CM2, iv.get("bmd"), VERTEBRA_CODES[v], image_ref,
                       algorithm)]
    if t is not None:
      ms.append(_measurement(T_SCORE_CODE, t, T_UNIT, iv.get("t_score"), VERTEBRA_CODES[v],
                             image_ref, algorithm))
    evaluations = []
    if v == lumbar.LUMBAR and result.get("who_category"):
      evaluations.append(hd.sr.QualitativeEvaluation(
          WHO_CATEGORY, CATEGORY_CODES[result["who_category"]]))
    if v == (result.get("screening") or {}).get("column") and \
        result["screening"]["refer_dxa"] is not None:
      evaluations.append(hd.sr.QualitativeEvaluation(
          REFER, codes.SCT.Yes if result["screening"]["refer_dxa"] else codes.SCT.No))
    label = lum["vertebrae"] if v == lumbar.LUMBAR else v
    groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=hd.UID(), identifier=f"{label} predicted BMD"),
        finding_sites=[hd.sr.FindingSite(VERTEBRA_CODES[v])], method=METHOD,
        algorithm_id=algorithm, measurements=ms, qualitative_evaluations=evaluations or None,
        source_images=[hd.sr.SourceImageForMeasurementGroup(source.SOPClassUID,
                                                            source.SOPInstanceUID)]))
  centres, side, angle = rois.roi_boxes(landmarks)
  for name, centre in zip(rois.ROI_NAMES, centres):
    corners = rois.box_corners(centre, side, angle)
    closed = np.vstack([corners, corners[:1]]).astype(np.float32)
    groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(),
                                                     identifier=f"ROI {name}"),
        referenced_region=hd.sr.ImageRegion(hd.sr.GraphicTypeValues.POLYLINE, closed,
                                            region_ref),
        algorithm_id=algorithm))
  observer = hd.sr.ObserverContext(
      observer_type=codes.DCM.Device,
      observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
          uid=hd.UID(), name="bmdjax", model_name=f"bmdjax {_version()}"))
  report = hd.sr.MeasurementReport(
      observation_context=hd.sr.ObservationContext(observer_device_context=observer),
      procedure_reported=codes.DCM.BoneMineralDensitometry, imaging_measurements=groups)
  sr = hd.sr.Comprehensive3DSR(
      evidence=[source], content=report, series_instance_uid=hd.UID(), series_number=901,
      sop_instance_uid=hd.UID(), instance_number=1, manufacturer="bmdjax (research use)",
      is_complete=True, is_final=False, is_verified=False)
  sr.SeriesDescription = "bmdjax BMD estimate - research use, not for diagnosis"
  _scrub(sr, source)
  return sr


_TEXT_VRS = ("PN", "LO", "SH", "DA", "TM", "DT", "AS", "LT", "ST", "UT", "UI")
_REFERENCE_FIELDS = ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID")


def _scrub(sr: pydicom.Dataset, source: pydicom.Dataset):
  """Empties every element, at any depth, holding a value of the source
  header other than SR_COPIED_FIELDS and the image reference: highdicom
  copies more (e.g. InstitutionName into ContributingEquipmentSequence)."""
  keep = SR_COPIED_FIELDS + _REFERENCE_FIELDS
  allowed = {str(source.get(k)) for k in keep if source.get(k) not in (None, "")}
  secret = {str(el.value) for el in source
            if el.VR in _TEXT_VRS and el.keyword not in keep and el.value not in (None, "")
            and len(str(el.value)) >= 3} - allowed

  def walk(ds):
    for el in ds:
      if el.VR == "SQ":
        for item in el.value:
          walk(item)
      elif el.VR in _TEXT_VRS and el.value not in (None, "") and str(el.value) in secret:
        el.value = ""

  for keyword in _EMPTIED_FIELDS:
    if keyword in sr:
      sr.data_element(keyword).value = ""
  walk(sr)


def write(result: dict, source_path: str, landmarks, out_path: str, runs) -> str:
  """Builds the SR of `result` for the image at `source_path`; returns out_path."""
  source = pydicom.dcmread(source_path, stop_before_pixels=True)
  build(result, source, landmarks, runs).save_as(out_path, enforce_file_format=True)
  return out_path


def read_values(path: str) -> dict:
  """{(finding site, LOINC code): {value, lower, upper}} of the BMD and T-score
  items of an SR (lower/upper: the interval from the TID 310 uncertainties),
  read back with pydicom, to check a PACS sees what was predicted."""
  ds = pydicom.dcmread(path)
  wanted = {BMD_CODE.value, T_SCORE_CODE.value}
  out = {}

  def walk(items):
    for item in items:
      name = item.ConceptNameCodeSequence[0] if "ConceptNameCodeSequence" in item else None
      if item.get("ValueType") == "NUM" and name is not None and name.CodeValue in wanted:
        value = float(item.MeasuredValueSequence[0].NumericValue)
        entry = {"value": value, "lower": None, "upper": None}
        site = None
        for child in item.get("ContentSequence", []):
          meaning = child.ConceptNameCodeSequence[0].CodeMeaning.lower()
          if meaning == "finding site":
            site = child.ConceptCodeSequence[0].CodeMeaning
          elif "uncertainty" in meaning and child.get("ValueType") == "NUM":
            u = float(child.MeasuredValueSequence[0].NumericValue)
            if "upper" in meaning:
              entry["upper"] = value + u
            else:
              entry["lower"] = value - u
        out[(site, name.CodeValue)] = entry
      elif "ContentSequence" in item:
        walk(item.ContentSequence)

  walk(ds.ContentSequence)
  return out
