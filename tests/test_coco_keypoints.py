"""COCO keypoints export/import: names, skeleton, exact round trip, refusals."""

import copy
import json

import numpy as np
import pytest

from bmdjax.annotation import interchange
from bmdjax.annotation import store as store_lib
from data_prep import coco_keypoints, rois


def _studies(n=5, seed=0):
  rng = np.random.default_rng(seed)
  # Full float64 precision, not just 2 decimals: the round trip must be exact.
  return [{"image": f"site/S{k:03d}.dcm", "width": 2000 + k, "height": 2400 - k,
           "landmarks": rng.uniform(0, 2000, (16, 2))} for k in range(n)]


def test_category_has_the_16_names_and_the_skeleton_one_based():
  cat = coco_keypoints.category()
  assert cat["keypoints"] == list(rois.LANDMARK_NAMES) and len(cat["keypoints"]) == 16
  # COCO numbers keypoints from 1: edge (0, 1) is [1, 2].
  assert [[a - 1, b - 1] for a, b in cat["skeleton"]] == [list(e) for e in rois.LANDMARK_EDGES]


def test_layout_is_coco_keypoints():
  coco = coco_keypoints.to_coco(_studies(2))
  ann, im = coco["annotations"][0], coco["images"][0]
  assert im == {"id": 1, "file_name": "site/S000.dcm", "width": 2000, "height": 2400}
  kp = np.array(ann["keypoints"]).reshape(16, 3)
  np.testing.assert_array_equal(kp[:, :2], _studies(2)[0]["landmarks"])
  assert (kp[:, 2] == 2).all() and ann["num_keypoints"] == 16 and ann["image_id"] == 1
  x0, y0, w, h = ann["bbox"]
  lm = _studies(2)[0]["landmarks"]
  assert (x0, y0) == tuple(lm.min(0)) and np.isclose(x0 + w, lm[:, 0].max())


def test_csv_to_coco_to_csv_is_exact(tmp_path):
  src, back, coco = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.json"
  store = store_lib.AnnotationStore(str(src))
  for s in _studies():
    store.save(s["image"], status="accepted", landmarks=s["landmarks"].tolist(),
               shape=(s["height"], s["width"]))
  store.save("site/bad.dcm", status="unusable", reason="lateral")
  assert interchange.export_coco(str(src), str(coco), None) == 5  # unusable left out
  assert interchange.import_coco(str(coco), str(back)) == 5
  a, b = store_lib.read_rows(str(src)), store_lib.read_rows(str(back))
  assert set(b) == set(a) - {"site/bad.dcm"}
  for image in b:
    for col in store_lib.COORDS + ("width", "height", "status"):
      assert a[image][col] == b[image][col], (image, col)  # same text, same float
  truth = {s["image"]: s["landmarks"] for s in _studies()}
  for image in b:
    np.testing.assert_array_equal(np.array(store_lib.landmarks_of(b[image])), truth[image])


def test_import_puts_keypoints_of_another_order_back_in_ours():
  coco = coco_keypoints.to_coco(_studies(1))
  perm = np.random.default_rng(1).permutation(16)
  cat = coco["categories"][0]
  cat["keypoints"] = [cat["keypoints"][i] for i in perm]
  kp = np.array(coco["annotations"][0]["keypoints"]).reshape(16, 3)[perm]
  coco["annotations"][0]["keypoints"] = kp.ravel().tolist()
  out = coco_keypoints.from_coco(coco)
  np.testing.assert_array_equal(out[0]["landmarks"], _studies(1)[0]["landmarks"])


@pytest.mark.parametrize("change, message", [
    ("unlabelled", "l_rib_2 not labelled"),
    ("twice", "several annotations"),
    ("names", "unknown: \\['sternum'\\]"),
])
def test_import_refuses_with_the_reason(change, message, tmp_path):
  coco = coco_keypoints.to_coco(_studies(2))
  if change == "unlabelled":
    coco["annotations"][1]["keypoints"][11 * 3 + 2] = 0
  elif change == "twice":
    coco["annotations"].append({**copy.deepcopy(coco["annotations"][0]), "id": 9})
  else:
    coco["categories"][0]["keypoints"][0] = "sternum"
  path = tmp_path / "c.json"
  path.write_text(json.dumps(coco))
  with pytest.raises(ValueError, match=message):
    coco_keypoints.read(str(path))
  with pytest.raises(SystemExit, match=message):  # the CLI says the same and writes nothing
    interchange.import_coco(str(path), str(tmp_path / "o.csv"))
  assert not (tmp_path / "o.csv").exists()


def test_export_reads_image_sizes_from_the_dicoms_when_the_csv_has_none(tmp_path):
  from tests import annotate_browser
  cohort = annotate_browser.tiny_cohort(str(tmp_path / "cohort"), patients=2)
  out = tmp_path / "coco.json"
  with pytest.raises(SystemExit, match="give --dicom_dir"):
    interchange.export_coco(f"{cohort}/landmarks.csv", str(out), None)
  interchange.export_coco(f"{cohort}/landmarks.csv", str(out), f"{cohort}/dicom")
  from data_prep import dicom_io
  for im in json.loads(out.read_text())["images"]:
    h, w = dicom_io.read_radiograph(f"{cohort}/dicom/{im['file_name']}").image.shape
    assert (im["height"], im["width"]) == (h, w)
