"""What a clinician and a PACS/EHR see: overlay title vs category at the WHO
boundaries, the DICOM SR read back, FHIR validated against the R5 models."""

import copy
import json
import os
import re

import numpy as np
import pandas as pd
import pydicom
import pytest
from fhir.resources.bundle import Bundle

from bmdjax import clinical, dicom_sr, fhir, lumbar, prediction, tscore

VERTS = tscore.VERTEBRAE


def _bmd_at(t: float, sex: str = "F") -> dict:
  """Per-vertebra BMD with T-score t at every vertebra (so L1-L4 T = t)."""
  ref = tscore.load_reference()
  return {v: ref.mean_sd(sex, v)[0] + t * ref.mean_sd(sex, v)[1] for v in VERTS}


def _validation(n=400, seed=0) -> pd.DataFrame:
  """Validation predictions: truth + noise, both sexes, some osteoporosis."""
  rng = np.random.default_rng(seed)
  ref = tscore.load_reference()
  sex = rng.choice(["F", "M"], n)
  latent = rng.normal(-1.2, 1.2, n)
  frame = pd.DataFrame({"patient_id": [f"P{i}" for i in range(n)],
                        "image": [f"S{i}.dcm" for i in range(n)], "sex": sex,
                        "age": rng.uniform(40, 90, n)})
  for v in VERTS:
    m = np.array([ref.mean_sd(s, v)[0] for s in sex])
    sd = np.array([ref.mean_sd(s, v)[1] for s in sex])
    frame[f"true_{v}"] = (m + sd * (latent + 0.3 * rng.normal(size=n))).round(5)
    frame[f"pred_{v}"] = frame[f"true_{v}"] + rng.normal(0, 0.08, n)
  return frame


@pytest.fixture(scope="module")
def fitted():
  return clinical.fit(_validation())


def _result(t, fitted=None, sex="F"):
  scores = prediction._scores(_bmd_at(t, sex), sex, "given", tscore.load_reference(), fitted,
                              False)
  return {"study": "x.dcm", "status": "ok", "reason": "", **scores}


@pytest.mark.parametrize("t, shown, category", [
    (-0.98, "-1.0", "normal"), (-1.0, "-1.0", "normal"), (-1.04, "-1.0", "normal"),
    (-1.06, "-1.1", "osteopenia"), (-0.94, "-0.9", "normal"), (-2.5, "-2.5", "osteoporosis"),
    (-2.46, "-2.5", "osteoporosis"), (-2.44, "-2.4", "osteopenia")])
@pytest.mark.parametrize("with_fit", [False, True])
def test_overlay_title_and_category_agree_at_boundaries(t, shown, category, with_fit, fitted):
  result = _result(t, fitted if with_fit else None)
  assert result["lumbar"]["t_score"] == pytest.approx(t)
  title = prediction._title("x.dcm", result)
  match = re.search(r"\| L1-L4 \d\.\d{3} g/cm2, T ([+-]\d\.\d)[^:]*: (\w+)", title)
  assert match, title
  assert match.group(1) == shown and match.group(2) == category
  assert tscore.who_category(float(match.group(1))) == match.group(2)
  assert result["who_category"] == category
  table = prediction.format_table([{**result, "model": "m", "landmarks": {"source": "given"}}])
  assert f"T-score {shown}): {category}" in table


def test_single_vertebra_gives_no_category():
  ref = tscore.load_reference()
  scores = prediction._scores({"L1": _bmd_at(-3.0)["L1"]}, "F", "given", ref, None, False)
  assert scores["who_category"] is None and scores["lumbar"] is None
  assert any("ISCD" in n for n in scores["notes"])
  title = prediction._title("x.dcm", {"status": "ok", **scores})
  assert "osteoporosis" not in title and "no WHO category" in title


def test_no_sex_no_category_no_referral(fitted):
  scores = prediction._scores(_bmd_at(-3.0), None, None, tscore.load_reference(), fitted, False)
  assert scores["who_category"] is None and scores["screening"]["refer_dxa"] is None
  title = prediction._title("x.dcm", {"status": "ok", **scores})
  assert "referral" not in title.lower() and "REFER" not in title


def test_iscd_exclusion_reaches_the_report():
  ref = tscore.load_reference()
  bmd = _bmd_at(-2.0)
  bmd["L4"] = _bmd_at(-0.5)["L4"]  # 1.5 T above L3: excluded
  scores = prediction._scores(bmd, "F", "given", ref, None, False)
  assert scores["lumbar"]["vertebrae"] == "L1-L3"
  assert scores["lumbar"]["t_score"] == pytest.approx(-2.0)
  assert any(r.startswith("L4: excluded") for r in scores["lumbar"]["excluded"])


def test_intervals_category_statement_and_referral(fitted):
  low = _result(-3.2, fitted)
  q = fitted["raw"][lumbar.LUMBAR]["q_t"]
  lo, hi = low["intervals"][lumbar.LUMBAR]["t_score"]
  assert hi - lo == pytest.approx(2 * q, abs=0.02)
  assert low["category_statement"].startswith("90% interval of the L1-L4 T-score")
  assert low["screening"]["refer_dxa"] is True
  assert "refer for DXA" in low["screening"]["decision"]
  high = _result(0.5, fitted)
  assert high["screening"]["refer_dxa"] is False
  assert clinical.category_range(-2.94, -1.76) == \
      "T-score -2.9 to -1.8: osteopenia or osteoporosis"
  assert clinical.category_range(-0.5, 1.2) == "T-score -0.5 to +1.2: normal"


def test_recalibrate_uses_the_validation_line(fitted):
  ref = tscore.load_reference()
  bmd = _bmd_at(-1.5)
  out = clinical.assess(bmd, "F", ref, fitted, recalibrate=True)
  for v in VERTS:
    r = fitted["recalibration"][v]
    assert out["bmd"][v] == pytest.approx(r["a"] + r["b"] * bmd[v])


# ------------------------------------------------------------- DICOM SR


@pytest.fixture(scope="module")
def source_dicom(cohort_dir):
  return str(cohort_dir / "dicom" / sorted(os.listdir(cohort_dir / "dicom"))[0])


@pytest.fixture(scope="module")
def sr_file(source_dicom, fitted, tmp_path_factory, cohort_dir):
  result = _result(-2.7, fitted)
  marks = pd.read_csv(cohort_dir / "landmarks.csv").set_index("image")
  lm = marks.loc[os.path.basename(source_dicom)].to_numpy(float).reshape(16, 2)
  out = tmp_path_factory.mktemp("sr") / "study_sr.dcm"
  dicom_sr.write(result, source_dicom, lm, str(out), ["run_all: attmulroi"])
  return result, out


def test_sr_reads_back_with_values_and_image_reference(sr_file, source_dicom):
  result, path = sr_file
  src = pydicom.dcmread(source_dicom, stop_before_pixels=True)
  ds = pydicom.dcmread(path)
  assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
  assert ds.ContentTemplateSequence[0].TemplateIdentifier == "1500"
  ref = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
  assert ref.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
  assert ds.StudyInstanceUID == src.StudyInstanceUID
  assert ds.SOPInstanceUID != src.SOPInstanceUID
  values = dicom_sr.read_values(str(path))
  sites = {v: dicom_sr.VERTEBRA_CODES[v].meaning for v in list(VERTS) + [lumbar.LUMBAR]}
  for v in VERTS:
    got = values[(sites[v], "38263-6")]
    assert got["value"] == pytest.approx(result["bmd"][v], abs=1e-9)
    assert [got["lower"], got["upper"]] == pytest.approx(result["intervals"][v]["bmd"],
                                                         abs=1e-6)
    assert values[(sites[v], "38267-7")]["value"] == pytest.approx(result["t_score"][v])
  lum = values[(sites[lumbar.LUMBAR], "38267-7")]
  assert lum["value"] == pytest.approx(result["lumbar"]["t_score"])
  assert [lum["lower"], lum["upper"]] == pytest.approx(
      result["intervals"][lumbar.LUMBAR]["t_score"], abs=1e-6)
  # Every measurement points at the source image, and the category is there.
  text = str(ds)
  assert text.count(src.SOPInstanceUID) >= 10
  assert "Osteoporosis" in text and "not a DXA measurement" in text
  assert b"run_all: attmulroi" in path.read_bytes()  # algorithm parameters (long text)
  # highdicom parses it back as a TID 1500 report: 5 measurement groups, 14 ROIs.
  import highdicom as hd  # pylint: disable=import-outside-toplevel
  parsed = hd.sr.srread(str(path))
  groups = parsed.content.get_image_measurement_groups()
  assert [str(g.tracking_identifier) for g in groups] == [
      f"{v} predicted BMD" for v in list(VERTS) + ["L1-L4"]]
  assert len(parsed.content.get_planar_roi_measurement_groups()) == 14
  evaluations = {q.name.meaning: q.value.meaning
                 for q in groups[-1].get_qualitative_evaluations()}
  assert evaluations == {"Predicted WHO category (L1-L4)": "Osteoporosis",
                         "Screening: refer for DXA": "Yes"}


def test_sr_copies_only_the_fields_it_must(sr_file, source_dicom):
  _, path = sr_file
  src = pydicom.dcmread(source_dicom, stop_before_pixels=True)
  ds = pydicom.dcmread(path)
  for field in dicom_sr.SR_COPIED_FIELDS:
    assert str(ds.get(field)) == str(src.get(field)), field
  raw = path.read_bytes()
  for field in ("PatientBirthDate", "OtherPatientIDs", "PatientAddress", "InstitutionName",
                "ReferringPhysicianName", "OperatorsName", "ImageComments", "StudyDate"):
    value = src.get(field)
    if value not in (None, ""):
      assert str(value).encode() not in raw, field


# ------------------------------------------------------------- FHIR


def test_fhir_bundle_validates_and_says_prediction(fitted):
  result = _result(-2.7, fitted)
  data = fhir.bundle(result, "bmdjax test")
  parsed = Bundle.model_validate(copy.deepcopy(data))
  observations = [e.resource for e in parsed.entry]
  bmd = [o for o in observations if o.code.coding[0].code == "38263-6"]
  tsc = [o for o in observations if o.code.coding[0].code == "38267-7"]
  assert len(bmd) == len(tsc) == 5
  assert all(o.code.coding[0].system == "http://loinc.org" for o in bmd + tsc)
  lum_t = next(o for o in tsc if o.bodySite.text == "L1-L4")
  assert float(lum_t.valueQuantity.value) == pytest.approx(result["lumbar"]["t_score"],
                                                           abs=1e-4)
  assert lum_t.interpretation[0].coding[0].display == "Osteoporosis"
  for o in observations:
    # fhir.resources does not check required code bindings: status by hand.
    assert o.status == "preliminary"
    assert o.meta.tag[0].code == "model-prediction"
    assert "not a DXA measurement" in o.note[0].text
  assert "not DXA" in bmd[0].code.text
  refer = next(o for o in observations if o.valueBoolean is not None)
  assert refer.valueBoolean is True
  json.dumps(data)


def test_fhir_validation_is_not_blind():
  """The validator rejects what R5 forbids (negative controls): a missing
  required element, an unknown element, a non-decimal value."""
  for break_it in (lambda o: o.pop("code"), lambda o: o.update(bogus=1),
                   lambda o: o["valueQuantity"].update(value="low")):
    bad = fhir.bundle(_result(-1.0), "x")
    break_it(bad["entry"][0]["resource"])
    with pytest.raises(Exception, match="validation error"):
      Bundle.model_validate(bad)


# ------------------------------------------------------------- the report


def test_report_clinical_section_matches_recomputation(tmp_path):
  """metrics.json's coverage, calibration and screening against float64 numpy
  recomputations from the same predictions."""
  from bmdjax import report  # pylint: disable=import-outside-toplevel
  val, test = _validation(400, 0), _validation(300, 1)
  fitted = clinical.fit(val)
  result = report.write_report(test, str(tmp_path), clinical_fit=fitted, validation=val,
                               bootstrap=50)
  sec = result["clinical"]["columns"]
  ref = tscore.load_reference()
  sex = test["sex"].to_numpy()
  true = lumbar.combine(lumbar.frame_bmd(test, "true_"), sex, ref)
  pred = lumbar.combine(lumbar.frame_bmd(test, "pred_"), sex, ref)
  q = fitted["raw"][lumbar.LUMBAR]["q_bmd"]
  ok = np.isfinite(true["bmd"]) & np.isfinite(pred["bmd"])
  cov = np.mean(np.abs(true["bmd"][ok] - pred["bmd"][ok]) <= q)
  lum = sec[lumbar.LUMBAR]
  assert lum["coverage"]["coverage_bmd"] == pytest.approx(cov)
  assert lum["coverage"]["width_bmd"] == pytest.approx(2 * q)
  lo, hi = lum["coverage"]["coverage_bmd_ci"]
  assert lo <= cov <= hi
  slope, intercept = np.polyfit(pred["bmd"][ok], true["bmd"][ok], 1)
  assert lum["calibration"]["before"]["slope"] == pytest.approx(slope)
  assert lum["calibration"]["before"]["intercept"] == pytest.approx(intercept)
  # Recalibration fitted on validation, applied per vertebra, then combined.
  recal = {f"pred_{v}": fitted["recalibration"][v]["a"] + fitted["recalibration"][v]["b"]
           * test[f"pred_{v}"] for v in VERTS}
  after = lumbar.combine(lumbar.frame_bmd(pd.DataFrame(recal), "pred_"), sex, ref)
  ok2 = ok & np.isfinite(after["bmd"])
  assert lum["calibration"]["after"]["slope"] == pytest.approx(
      np.polyfit(after["bmd"][ok2], true["bmd"][ok2], 1)[0])
  thr = fitted["raw"][lumbar.LUMBAR]["screening_threshold_t"]
  pos = true["t"] <= -2.5
  known = np.isfinite(true["t"])
  flagged = pred["t"] <= thr
  scr = lum["screening"]["test"]
  assert scr["sensitivity"] == pytest.approx((pos & flagged)[known].sum() / pos[known].sum())
  assert scr["specificity"] == pytest.approx((~pos & ~flagged)[known].sum()
                                             / (~pos)[known].sum())
  # The threshold reached the target on validation.
  vt = lumbar.combine(lumbar.frame_bmd(val, "true_"), val["sex"].to_numpy(), ref)["t"]
  vp = lumbar.combine(lumbar.frame_bmd(val, "pred_"), val["sex"].to_numpy(), ref)["t"]
  vpos = vt <= -2.5
  assert (vpos & (vp <= thr)).sum() / vpos.sum() >= 0.9
  tables = (tmp_path / "tables.md").read_text()
  assert "Prediction intervals" in tables and "| L1-L4 |" in tables
  assert "Model card" in (tmp_path / "model_card.md").read_text()
  assert (tmp_path / "calibration_L1-L4.png").stat().st_size > 0


def test_runs_combine_on_their_joint_validation_split(tmp_path):
  val = _validation(200, 3)
  keys = ["patient_id", "image", "sex", "age"] + [f"true_{v}" for v in VERTS]
  for name, verts in (("a", ["L1", "L2"]), ("b", ["L3", "L4"])):
    path = tmp_path / name / clinical.VALIDATION_PREDICTIONS
    path.parent.mkdir(parents=True)
    val[keys + [f"pred_{v}" for v in verts]].sample(frac=1, random_state=0).to_csv(
        path, index=False)
  fitted = clinical.fit_runs([str(tmp_path / "a"), str(tmp_path / "b")])
  assert fitted["columns"] == list(VERTS) + [lumbar.LUMBAR]
  assert fitted["raw"][lumbar.LUMBAR]["q_bmd"] == pytest.approx(
      clinical.fit(val)["raw"][lumbar.LUMBAR]["q_bmd"])
  short = tmp_path / "c" / clinical.VALIDATION_PREDICTIONS
  short.parent.mkdir(parents=True)
  val[keys + ["pred_L3"]].head(150).to_csv(short, index=False)
  with pytest.raises(ValueError, match="validation studies differ"):
    clinical.fit_runs([str(tmp_path / "a"), str(tmp_path / "c")])
  with pytest.raises(FileNotFoundError, match="bmdjax.evaluate"):
    clinical.fit_runs([str(tmp_path / "missing")])
