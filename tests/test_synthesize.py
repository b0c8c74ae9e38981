"""The synthetic cohort: patient statistics, the image signal, the CLI outputs."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pydicom
import pytest
from scipy import ndimage

from data_prep import anatomy, dicom_io, film_processing, rois
from data_prep import synthesize as syn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VERT = list(syn.VERTEBRAE)


@pytest.fixture(scope="module")
def patients():
  return syn.sample_patients(20_000, np.random.default_rng(0))


def test_patient_columns(patients):
  assert list(patients.columns) == ["patient_id", "sex", "age", *VERT, "density"]
  assert patients.patient_id.is_unique
  assert patients.patient_id.str.fullmatch(r"P\d{6}").all()
  assert set(patients.sex) == {"F", "M"}
  assert abs((patients.sex == "F").mean() - 0.5) < 0.02
  assert patients.age.between(20, 90).all()


def test_age_distribution(patients):
  age = patients.age
  assert age.between(45, 75).mean() > 0.6
  assert (age > 75).mean() < 0.05
  per_year = age.value_counts().reindex(range(20, 91), fill_value=0)
  # Paper: many cases per year of age at 45-60, few above 75.
  assert per_year.loc[45:60].min() > 5 * per_year.loc[76:90].max()


def test_residual_correlations_match_table_vi(patients):
  bmd = patients[VERT].to_numpy()
  z = (bmd - syn.mean_bmd(patients.sex, patients.age)) / syn.residual_sd(patients.sex)
  corr = np.corrcoef(z.T)
  assert np.abs(corr - syn.RESIDUAL_CORR).max() < 0.03


def test_vertebra_means(patients):
  mean = patients[VERT].mean()
  assert mean.L3 > mean.L2 > mean.L1 and mean.L4 > mean.L1
  assert (mean.L3 + mean.L4) / 2 > (mean.L1 + mean.L2) / 2 + 0.05
  assert 0.12 < patients.L1.std() < 0.22


def test_sex_and_age_trends(patients):
  def mean(sex, lo, hi):
    sel = (patients.sex == sex) & patients.age.between(lo, hi)
    return patients.loc[sel, VERT].mean()
  # Women above men before 50; women lose bone after the menopause, men little.
  assert (mean("F", 20, 49) > mean("M", 20, 49)).all()
  assert (mean("F", 20, 49) - mean("F", 65, 75) > 0.15).all()
  assert (np.abs(mean("M", 20, 49) - mean("M", 65, 75)) < 0.05).all()
  assert (mean("F", 65, 75) < mean("M", 65, 75)).all()


def test_osteoporosis_share(patients):
  t = syn.t_scores(patients.sex, patients[VERT].to_numpy())
  share = (t <= -2.5).mean(axis=0)
  assert ((share > 0.04) & (share < 0.25)).all()
  assert 0.08 < (t <= -2.5).any(axis=1).mean() < 0.3
  old_women = ((patients.sex == "F") & (patients.age >= 65)).to_numpy()
  assert (t[old_women, 0] <= -2.5).mean() > 0.25


def test_density_latent_tracks_bmd(patients):
  r = [np.corrcoef(patients.density, patients[v])[0, 1] for v in VERT]
  assert min(r) > 0.9


def test_ceiling_r():
  c = syn.ceiling_r(200_000, seed=0)
  assert list(c) == VERT
  assert 0.92 <= c["L1"] <= 0.95
  assert all(0.85 < c[v] < 0.97 for v in VERT)
  assert c["L4"] < c["L1"]


def test_missing_never_all_four():
  miss = syn.assign_missing(20_000, 0.5, np.random.default_rng(1))
  assert not miss.all(axis=1).any()
  assert 0.4 < miss.mean() < 0.5


def test_followup_bmd_is_close():
  rng = np.random.default_rng(2)
  df = syn.sample_patients(2000, rng)
  bmd = df[VERT].to_numpy()
  later = syn.followup_bmd(df.sex, df.age, bmd, 2, rng)
  assert np.abs(later - bmd).mean() < 0.05
  women = ((df.sex == "F") & df.age.between(50, 60)).to_numpy()
  assert (later[women] - bmd[women]).mean() < -0.01  # post-menopausal loss


def test_render_signal_in_every_roi():
  """Same anatomy and noise, denser bones: every ROI crop gets brighter bone."""
  crops = []
  for d in (-2.0, 2.0):
    r = syn.render_chest(np.full(14, d), np.random.default_rng(3), (0.6, 0.75))
    crops.append(rois.crop_rois(dicom_io.normalise(r.image), r.landmarks, 64))
  assert crops[0].shape == (14, 64, 64)
  # Bone contrast over the local background (white top-hat).
  bone = [np.array([(c - ndimage.grey_opening(c, size=(25, 25))).mean() for c in cc])
          for cc in crops]
  assert (bone[1] > 1.2 * bone[0]).all()


def test_render_is_deterministic_and_landmarks_inside():
  a = syn.render_chest(np.zeros(14), np.random.default_rng(4), (1.0, 1.2))
  b = syn.render_chest(np.zeros(14), np.random.default_rng(4), (1.0, 1.2))
  np.testing.assert_array_equal(a.image, b.image)
  np.testing.assert_array_equal(a.landmarks, b.landmarks)
  h, w = a.image.shape
  assert a.landmarks.shape == (16, 2)
  assert (a.landmarks >= 0).all() and (a.landmarks[:, 0] < w).all() and (a.landmarks[:, 1] < h).all()
  # Anatomy: right structures on the image left, C7 above T12, clavicles above ribs.
  lm = a.landmarks
  assert (lm[0:3, 0] < lm[3:6, 0]).all() and (lm[6:10, 0] < lm[10:14, 0]).all()
  assert lm[14, 1] < lm[0, 1] < lm[6, 1] < lm[9, 1] < lm[15, 1] + 20
  assert (np.diff(lm[6:10, 1]) > 0).all() and (np.diff(lm[10:14, 1]) > 0).all()


def _disc_mean(img, centre, radius):
  yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]]
  m = (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= radius ** 2
  return float(img[m].mean()) if m.any() else np.nan


def test_landmarks_sit_on_the_bones_they_name():
  """Averaged over films, clavicle and spine landmarks are brighter than the
  tissue beside them, and rib-cage landmarks sit on the outer edge of a rib
  (bone just inside is brighter than the lung further in)."""
  clav, spine, ribs = [], [], []
  for seed in range(4):
    r = syn.render_chest(np.zeros(14), np.random.default_rng(seed), (0.8, 0.9), plain=True)
    img, lm, mm = dicom_io.normalise(r.image), r.landmarks, 1.0 / r.spacing
    up, side = np.array([0.0, 1.0]), np.array([1.0, 0.0])
    for k in (1, 4):  # clavicle middles against 14 mm above and below
      here = _disc_mean(img, lm[k], 2.5 * mm)
      clav.append(here - np.mean([_disc_mean(img, lm[k] + s * 14 * mm * up, 2.5 * mm)
                                  for s in (-1, 1)]))
    # C7 and T12 on vertebral bodies: brighter than the disc spaces above and below.
    axis = (lm[15] - lm[14]) / np.linalg.norm(lm[15] - lm[14])
    for k, step in ((14, anatomy.VERT_STEP[anatomy.C7]), (15, anatomy.VERT_STEP[anatomy.T12])):
      gap = 0.5 * step * r.params["scale"] * mm
      here = _disc_mean(img, lm[k], 1.5 * mm)
      spine.append(here - np.mean([_disc_mean(img, lm[k] + s * gap * axis, 1.2 * mm)
                                   for s in (-1, 1)]))
    for k in range(6, 14):
      inward = side if k < 10 else -side
      ribs.append(_disc_mean(img, lm[k] + 3.5 * mm * inward, 1.5 * mm)
                  > _disc_mean(img, lm[k] + 14 * mm * inward, 1.5 * mm))
  assert np.mean(clav) > 0.03 and np.mean(np.array(clav) > 0) >= 0.75, clav
  assert np.mean(spine) > 0.03 and np.mean(np.array(spine) > 0) >= 0.75, spine
  assert np.mean(ribs) >= 0.85, ribs


def test_plain_leaves_out_markers_text_and_collimation_only():
  """--plain: no lead marker, annotation or collimated border; the same film otherwise."""
  seen = 0
  for seed in range(12):
    a = syn.render_chest(np.zeros(14), np.random.default_rng(seed), (1.8, 2.0))
    b = syn.render_chest(np.zeros(14), np.random.default_rng(seed), (1.8, 2.0), plain=True)
    assert not b.params["collimated"] and b.params["marker"] is None
    assert b.params["annotation"] is None and b.params["shutter"] == "none"
    np.testing.assert_array_equal(a.landmarks, b.landmarks)
    assert a.params["devices"] == b.params["devices"] and a.view == b.view
    if a.params["shutter"] == "white" and a.params["marker"]:
      seen += 1
      # A white shutter fills the border: its outermost rows/columns are all white
      # there, never in the plain film (air beside the neck is dark).
      ia, ib = (dicom_io.normalise(x.image) for x in (a, b))
      edges = lambda im: max(im[0].min(), im[-1].min(), im[:, 0].min(), im[:, -1].min())
      assert edges(ia) >= 0.99 and edges(ib) < 0.5
  assert seen >= 1


def test_processing_is_drawn_per_film():
  """CR/DX processing varies per film: the same exposure processed with different
  draws puts the same vertebra at different grey levels (no absolute anchor),
  while the order of local grey levels (T12 against the tissue beside it) stays."""
  r = syn.render_chest(np.zeros(14), np.random.default_rng(0), (1.8, 2.0), plain=True)
  log = r.image  # any bone-bright image will do as the log exposure
  c, rad = r.landmarks[15], 4 / r.spacing
  sign = np.sign(_disc_mean(log, c, rad) - _disc_mean(log, c + [40 / r.spacing, 0], rad))
  level, contrast = [], []
  for seed in range(8):
    for modality in ("CR", "DX"):
      img, _ = film_processing.process(log, r.spacing, np.random.default_rng(seed),
                                       modality=modality)
      img = dicom_io.normalise(img)
      level.append(_disc_mean(img, c, rad))
      contrast.append(level[-1] - _disc_mean(img, c + [40 / r.spacing, 0], rad))
  assert np.std(level) > 0.05, level
  assert np.mean(np.sign(contrast) == sign) >= 0.9, contrast


def test_normalise_ignores_shutter_masks():
  """A black or white shutter border (as some systems burn in) does not move the
  grey levels of the anatomy: the reader's percentiles skip the extreme values."""
  r = syn.render_chest(np.zeros(14), np.random.default_rng(5), (1.8, 2.0), plain=True)
  img = 0.1 + 0.8 * r.image
  b = img.shape[0] // 8
  ref = dicom_io.normalise(img[b:-b])  # the film without the masked rows
  for value in (0.0, 1.0):
    masked = img.copy()
    masked[:b] = value
    masked[-b:] = value
    out = dicom_io.normalise(masked)
    np.testing.assert_allclose(out[b:-b], ref, atol=0.02)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
  out = tmp_path_factory.mktemp("cohort")
  cmd = [sys.executable, "-m", "bmdjax.synthesize", f"--out={out}", "--patients=6",
         "--seed=3", "--spacing_mm=1.0,1.2", "--followup_fraction=0.5",
         "--missing_fraction=0.3", "--workers=2"]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120,
                        env=dict(os.environ, PYTHONPATH=REPO))
  assert proc.returncode == 0, proc.stderr[-3000:]
  return out


def test_cli_labels(cohort):
  labels = pd.read_csv(cohort / "labels.csv", dtype=str, keep_default_na=False)
  assert list(labels.columns) == ["patient_id", "image", "sex", "age", *VERT]
  assert len(labels) == 9  # 6 patients, 3 with a follow-up study
  assert labels.patient_id.nunique() == 6
  assert (labels.patient_id.value_counts() <= 2).all()
  assert labels.image.is_unique
  assert labels.sex.isin(["F", "M"]).all() and labels.age.str.fullmatch(r"\d+").all()
  cells = labels[VERT]
  assert cells.apply(lambda c: c.str.fullmatch(r"(\d\.\d{3})?")).all().all()
  assert (cells == "").any().any()
  assert not (cells == "").all(axis=1).any()
  follow = labels[labels.patient_id.duplicated(keep=False)]
  for _, g in follow.groupby("patient_id"):
    assert g.sex.nunique() == 1 and g.age.astype(int).diff().iloc[1] >= 1


def test_cli_landmarks_and_dicoms(cohort):
  labels = pd.read_csv(cohort / "labels.csv")
  lms = pd.read_csv(cohort / "landmarks.csv")
  assert list(lms.columns) == ["image"] + [f"{a}{i}" for i in range(16) for a in "xy"]
  assert list(lms.image) == list(labels.image)
  seen = set()
  for (_, row), (_, lab) in zip(lms.iterrows(), labels.iterrows()):
    path = cohort / "dicom" / row.image
    rad = dicom_io.read_radiograph(path)
    h, w = rad.image.shape
    pts = row.iloc[1:].to_numpy(float).reshape(16, 2)
    assert (pts >= 0).all() and (pts[:, 0] < w).all() and (pts[:, 1] < h).all()
    assert 1.0 <= rad.pixel_spacing <= 1.2
    assert rois.crop_rois(rad.image, pts, 32).shape == (14, 32, 32)
    ds = pydicom.dcmread(path)
    assert ds.Modality in ("DX", "CR") and ds.ViewPosition in ("PA", "AP")
    assert 12 <= ds.BitsStored <= 16 and ds.BitsAllocated == 16
    assert ds.PatientID != lab.patient_id and lab.patient_id not in str(ds.PatientName)
    for key in ("PatientName", "PatientBirthDate", "InstitutionName", "AccessionNumber",
                "StudyDescription", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
      assert str(ds.get(key, "")), key
    assert ds.PatientSex == lab.sex
    seen.add(ds.SOPInstanceUID)
  assert len(seen) == len(lms)


def test_cli_followup_studies_share_the_patient(cohort):
  labels = pd.read_csv(cohort / "labels.csv")
  for _, g in labels[labels.patient_id.duplicated(keep=False)].groupby("patient_id"):
    a, b = (pydicom.dcmread(cohort / "dicom" / f, stop_before_pixels=True) for f in g.image)
    assert a.PatientID == b.PatientID and a.PatientName == b.PatientName
    assert a.PatientBirthDate == b.PatientBirthDate
    assert a.StudyDate < b.StudyDate and a.StudyInstanceUID != b.StudyInstanceUID


def test_cli_cohort_json(cohort):
  info = json.loads((cohort / "cohort.json").read_text())
  assert info["settings"]["seed"] == 3 and info["settings"]["patients"] == 6
  assert set(info["ceiling_r"]) == set(VERT)
  assert all(0 < info["ceiling_r"][v] < 1 for v in VERT)
  assert "upper bound" in info["ceiling_note"] and info["ceiling_method"]
  assert set(info["summary"]["osteoporosis_share"]) == set(VERT)


def test_generate_is_deterministic(tmp_path):
  kw = dict(patients=2, seed=5, spacing_range=(1.5, 1.6), followup_fraction=0.5,
            workers=1, ceiling_samples=20_000, progress=False)
  syn.generate(str(tmp_path / "a"), **kw)
  syn.generate(str(tmp_path / "b"), **kw)
  for name in ("labels.csv", "landmarks.csv"):
    assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
  for f in sorted(os.listdir(tmp_path / "a" / "dicom")):
    a, b = (pydicom.dcmread(tmp_path / d / "dicom" / f) for d in "ab")
    assert a.PatientName == b.PatientName and a.SOPInstanceUID == b.SOPInstanceUID
    np.testing.assert_array_equal(a.pixel_array, b.pixel_array)
