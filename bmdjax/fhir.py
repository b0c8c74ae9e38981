"""A screening result as FHIR R5 Observations an EHR can take in.

One Bundle (type collection) per study: lumbar BMD (LOINC 38263-6, g/cm2)
and T-score (LOINC 38267-7) for L1-L4 and each vertebra (bodySite: SNOMED CT
vertebra codes of DICOM CID 7603), the prediction interval as components,
the WHO category as the L1-L4 T-score's interpretation, and the screening
decision. Every Observation says it is a model prediction, not a DXA
measurement: status "preliminary", method and code text, a meta tag and a
note. No patient identifiers are written (no subject): the receiving system
links the bundle to its patient. tests/test_fhir.py validates the output
with the fhir.resources R5 models.
"""

from __future__ import annotations

import json
import uuid

from bmdjax import dicom_sr, lumbar

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
LOCAL = "urn:bmdjax"  # local code system for what no standard concept says
PREDICTION_NOTE = ("Model prediction from a chest radiograph (bmdjax), not a DXA "
                   "measurement. Research use, not for diagnosis: confirm with DXA.")


def _coding(concept) -> dict:
  """A highdicom CodedConcept (shared with the SR) as a FHIR Coding."""
  system = {"LN": LOINC, "SCT": SNOMED, "UCUM": UCUM}.get(concept.scheme_designator, LOCAL)
  return {"system": system, "code": concept.value, "display": concept.meaning}


def _quantity(value: float, unit) -> dict:
  return {"value": round(float(value), 4), "unit": unit.meaning, "system": UCUM,
          "code": unit.value}


def _observation(code, what: str, site: str, value: float, unit, interval, level,
                 device: str) -> dict:
  obs = {
      "resourceType": "Observation",
      "id": str(uuid.uuid4()),
      "meta": {"tag": [{"system": LOCAL, "code": "model-prediction",
                        "display": "Model prediction, not a measurement"}]},
      "status": "preliminary",
      "category": [{"coding": [{
          "system": "http://terminology.hl7.org/CodeSystem/observation-category",
          "code": "imaging", "display": "Imaging"}]}],
      "code": {"coding": [_coding(code)],
               "text": f"Predicted {what} {site} from chest radiograph (model, not DXA)"},
      "method": {"coding": [_coding(dicom_sr.METHOD)], "text": dicom_sr.METHOD.meaning},
      "bodySite": {"coding": [_coding(dicom_sr.VERTEBRA_CODES[
          lumbar.LUMBAR if site not in dicom_sr.VERTEBRA_CODES else site])], "text": site},
      "device": {"display": device},
      "valueQuantity": _quantity(value, unit),
      "note": [{"text": PREDICTION_NOTE}],
  }
  if interval:
    obs["component"] = [
        {"code": {"coding": [{"system": LOCAL, "code": f"interval-{end}"}],
                  "text": f"{level:.0%} prediction interval, {end} limit (split-conformal)"},
         "valueQuantity": _quantity(x, unit)}
        for end, x in (("lower", interval[0]), ("upper", interval[1]))]
  return obs


def bundle(result: dict, device: str) -> dict:
  """The Bundle of one prediction.predict_studies result with status "ok"."""
  intervals = result.get("intervals") or {}
  level = intervals.get("level", 0.0)
  lum = result.get("lumbar") or {}
  rows = [(v, v, b, result["t_score"].get(v)) for v, b in result["bmd"].items()]
  if lum.get("bmd") is not None:
    rows.append((lumbar.LUMBAR, lum["vertebrae"], lum["bmd"], lum["t_score"]))
  entries = []
  for col, site, b, t in rows:
    iv = intervals.get(col, {})
    entries.append(_observation(dicom_sr.BMD_CODE, "bone mineral density", site, b,
                                dicom_sr.G_PER_CM2, iv.get("bmd"), level, device))
    if t is not None:
      obs = _observation(dicom_sr.T_SCORE_CODE, "T-score", site, t, dicom_sr.T_UNIT,
                         iv.get("t_score"), level, device)
      if col == lumbar.LUMBAR and result.get("who_category"):
        obs["interpretation"] = [{
            "coding": [_coding(dicom_sr.CATEGORY_CODES[result["who_category"]])],
            "text": f"Predicted WHO category {result['who_category']} (L1-L4 T-score "
                    f"{lum['t_score_reported']:+.1f})"
                    + (f"; {result['category_statement']}"
                       if result.get("category_statement") else "")}]
      entries.append(obs)
  screen = result.get("screening") or {}
  if screen.get("refer_dxa") is not None:
    entries.append({
        "resourceType": "Observation", "id": str(uuid.uuid4()),
        "meta": {"tag": [{"system": LOCAL, "code": "model-prediction"}]},
        "status": "preliminary",
        "code": {"coding": [_coding(dicom_sr.REFER)], "text": "Screening: refer for DXA"},
        "device": {"display": device},
        "valueBoolean": bool(screen["refer_dxa"]),
        "note": [{"text": f"{screen['decision']}. {PREDICTION_NOTE}"}]})
  return {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "collection",
          "entry": [{"fullUrl": f"urn:uuid:{e['id']}", "resource": e} for e in entries]}


def write(result: dict, out_path: str, device: str) -> str:
  with open(out_path, "w", encoding="utf-8") as f:
    json.dump(bundle(result, f"bmdjax: {device}"), f, indent=1)
  return out_path
