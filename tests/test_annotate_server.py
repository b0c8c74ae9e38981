"""The annotation server over HTTP: what it serves, what it refuses, what it
computes (checks, ROI boxes, review order), and that no header text leaks."""

import io
import json
import os
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pandas as pd
from PIL import Image
import pydicom
import pytest

from bmdjax.annotation import sources
from bmdjax.annotation import server as server_lib
from data_prep import dicom_io, rois
from tests import annotate_browser


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
  root = tmp_path_factory.mktemp("annotate_cohort")
  annotate_browser.tiny_cohort(str(root / "cohort"), patients=4)
  (root / "secret.txt").write_text("outside the DICOM folder")
  os.symlink(root / "secret.txt", root / "cohort" / "dicom" / "link.dcm")
  return root


@pytest.fixture()
def served(cohort, tmp_path):
  """A server pre-filled with detector-like output: study 1 confident, study 2
  least confident, study 3 flagged, study 0 without confidences."""
  marks = pd.read_csv(cohort / "cohort" / "landmarks.csv")
  for i in range(16):
    marks[f"conf{i}"] = ["", "0.9", "0.6", "0.8"]
  marks["flags"] = ["", "", "", "spine: C7 is not above T12"]
  marks["error"] = ""
  prefill = tmp_path / "landmarks_detected.csv"
  marks.to_csv(prefill, index=False)
  session = sources.make_session(str(cohort / "cohort" / "dicom"), str(tmp_path / "out.csv"),
                                  landmarks=str(prefill))
  server = server_lib.Server(session, port=0).start()
  yield server, session, marks
  server.stop()


def get(server, path):
  try:
    with urllib.request.urlopen(server.url.rstrip("/") + path) as r:
      return r.status, r.read(), r.headers.get("Content-Type")
  except urllib.error.HTTPError as e:
    return e.code, e.read(), e.headers.get("Content-Type")


def post(server, path, body):
  req = urllib.request.Request(server.url.rstrip("/") + path, json.dumps(body).encode(),
                               {"Content-Type": "application/json"})
  try:
    with urllib.request.urlopen(req) as r:
      return r.status, json.loads(r.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


def test_binds_to_localhost_by_default(served):
  assert served[0].httpd.server_address[0] == "127.0.0.1"


@pytest.mark.parametrize("path", [
    "/api/image?image=../secret.txt",
    "/api/image?image=" + urllib.parse.quote("../secret.txt", safe=""),
    "/api/image?image=%2Fetc%2Fpasswd",
    "/api/image?image=link.dcm",            # a link out of --dicom_dir
    "/api/image?image=S999999.dcm",         # not a study of the session
    "/api/image",
    "/api/study?image=../../cohort/labels.csv",
    "/static/../server.py",
    "/static/%2e%2e/server.py",
    "/../../etc/passwd",
    "/etc/passwd",
])
def test_paths_outside_the_session_are_404(served, path):
  server = served[0]
  req = urllib.request.Request(server.url.rstrip("/") + path)
  try:
    urllib.request.urlopen(req)
    code, body = 200, b""
  except urllib.error.HTTPError as e:
    code, body = e.code, e.read()
  assert code == 404, path
  assert b"outside the DICOM folder" not in body and b"root:" not in body
  status, _ = post(server, "/api/check", {"image": "../secret.txt", "landmarks": []})
  assert status == 404


def test_the_image_is_the_normalised_radiograph(served, cohort):
  status, body, ctype = get(served[0], "/api/image?image=S000001.dcm")
  assert status == 200 and ctype == "image/png"
  png = np.asarray(Image.open(io.BytesIO(body)))
  # Reference: the reader the training data goes through (LUTs, MONOCHROME1, 0.5/99.5%).
  ref = dicom_io.read_radiograph(cohort / "cohort" / "dicom" / "S000001.dcm").image
  assert png.shape == ref.shape and png.dtype == np.uint8
  assert np.abs(png.astype(float) - ref * 255).max() <= 0.5 + 1e-6


def test_no_dicom_header_text_reaches_the_page(served, cohort):
  server, session, _ = served
  texts = []
  for name in session.studies:
    if session.studies[name].path is None:
      continue
    ds = pydicom.dcmread(cohort / "cohort" / "dicom" / name, stop_before_pixels=True)
    for tag in ("PatientName", "PatientID", "PatientBirthDate", "InstitutionName",
                "ReferringPhysicianName", "StudyInstanceUID", "AccessionNumber"):
      value = str(ds.get(tag, "") or "")
      if len(value) >= 4:
        texts.append(value)
  assert len(texts) > 10  # the synthetic headers do carry fake PHI
  pages = [get(server, "/api/queue")[1], get(server, "/")[1]]
  pages += [get(server, f"/api/study?image={n}")[1] for n in ("S000000.dcm", "S000003.dcm")]
  for page in pages:
    for t in texts:
      assert t.encode() not in page, t


def test_queue_order_flagged_then_least_confident_then_the_rest(served):
  server, session, marks = served
  q = json.loads(get(server, "/api/queue")[1])
  order = [s["image"] for s in q["studies"]]
  assert order == ["S000003.dcm", "S000002.dcm", "S000001.dcm", "S000000.dcm"]
  assert q["annotated"] == 0 and q["total"] == 4
  lm = marks.loc[3, [f"{a}{i}" for i in range(16) for a in "xy"]].to_numpy(float)
  status, out = post(server, "/api/save", {"image": "S000003.dcm", "status": "accepted",
                                           "landmarks": lm.reshape(16, 2).tolist(),
                                           "revision": 0})
  assert status == 200 and out["annotated"] == 1
  q = json.loads(get(server, "/api/queue")[1])
  assert q["studies"][-1]["image"] == "S000003.dcm" and q["studies"][-1]["status"] == "accepted"


def test_check_returns_the_failed_checks_and_the_roi_boxes(served, cohort):
  server, _, marks = served
  lm = marks.loc[1, [f"{a}{i}" for i in range(16) for a in "xy"]].to_numpy(float).reshape(16, 2)
  status, out = post(server, "/api/check", {"image": "S000001.dcm", "landmarks": lm.tolist()})
  assert status == 200 and out["flags"] == []
  assert [b["name"] for b in out["rois"]] == list(rois.ROI_NAMES)
  # Independent float64 recomputation of the geometry (rois.py's contract):
  # squares of 0.14 x thorax width, turned with C7->T12, centred on the landmarks.
  width = np.mean(np.hypot(*(lm[10:14] - lm[6:10]).T))
  corners = np.array([b["corners"] for b in out["rois"]])
  sides = np.linalg.norm(corners[:, 1] - corners[:, 0], axis=-1)
  np.testing.assert_allclose(sides, 0.14 * width, rtol=1e-9)
  centres = corners.mean(1)
  np.testing.assert_allclose(centres[4:12], lm[6:14], atol=1e-9)
  np.testing.assert_allclose(centres[0], (lm[0] + 2 * lm[1] + lm[2]) / 4 - (lm[2] - lm[0]) / 4,
                             atol=1e-9)
  spine = lm[15] - lm[14]
  edge = corners[0, 1] - corners[0, 0]
  assert abs(np.dot(edge, spine)) < 1e-6 * np.linalg.norm(edge) * np.linalg.norm(spine)
  # C7 below T12: the spine check fails and is said.
  bad = lm.copy()
  bad[[14, 15]] = bad[[15, 14]]
  status, out = post(server, "/api/check", {"image": "S000001.dcm", "landmarks": bad.tolist()})
  assert any(f.startswith("spine: C7 is not above T12") for f in out["flags"])


def test_a_stale_save_answers_409_and_keeps_the_newer_row(served):
  server, session, marks = served
  lm = marks.loc[2, [f"{a}{i}" for i in range(16) for a in "xy"]].to_numpy(float)
  body = {"image": "S000002.dcm", "status": "accepted",
          "landmarks": lm.reshape(16, 2).tolist(), "revision": 0}
  assert post(server, "/api/save", body)[0] == 200
  status, out = post(server, "/api/save", {**body, "status": "unusable", "reason": "x"})
  assert status == 409 and "another tab" in out["error"]
  assert session.store.get("S000002.dcm")["status"] == "accepted"


def test_an_unreadable_study_says_why(cohort, tmp_path):
  d = tmp_path / "dicom"
  d.mkdir()
  (d / "broken.dcm").write_bytes(b"not a dicom file at all")
  os.symlink(cohort / "secret.txt", d / "link.dcm")
  session = sources.make_session(str(d), str(tmp_path / "o.csv"))
  server = server_lib.Server(session, port=0).start()
  try:
    status, body, _ = get(server, "/api/study?image=broken.dcm")
    link = get(server, "/api/image?image=link.dcm")[0]
  finally:
    server.stop()
  assert status == 422 and b"DICOM" in body
  assert link == 404 and session.studies["link.dcm"].path is None


def _real_ctrl_c():
  """In the child before exec: SIGINT's disposition (SIG_IGN for a shell's
  background jobs) and its signal mask (blocked by threads of earlier tests in
  this process) are inherited; the server under test must get a real Ctrl-C."""
  import signal
  signal.signal(signal.SIGINT, signal.SIG_DFL)
  signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])


def test_the_command_line_serves_the_page_and_stops_on_ctrl_c(cohort, tmp_path):
  import signal
  import socket
  import subprocess
  import sys
  help_text = subprocess.run([sys.executable, "-m", "bmdjax.annotate", "--help"],
                             capture_output=True, text=True).stdout
  for must in ("flagged studies first", "--export_coco", "init_from", "127.0.0.1"):
    assert must in help_text
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  out = tmp_path / "o.csv"
  proc = subprocess.Popen(
      [sys.executable, "-m", "bmdjax.annotate", f"--dicom_dir={cohort / 'cohort' / 'dicom'}",
       f"--out={out}", f"--landmarks={cohort / 'cohort' / 'landmarks.csv'}", f"--port={port}"],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      preexec_fn=_real_ctrl_c)
  try:
    line = ""
    while "Open http" not in line:
      line = proc.stdout.readline()
      assert line or proc.poll() is None, "the server exited"
    assert f"http://127.0.0.1:{port}/" in line
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/queue") as r:
      assert json.loads(r.read())["total"] == 4
  finally:
    proc.send_signal(signal.SIGINT)
    # communicate drains the pipe: a server blocked on a full stdout never exits.
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, rest[-2000:]


def test_without_any_points_a_study_starts_from_a_template_inside_the_image(cohort, tmp_path):
  session = sources.make_session(str(cohort / "cohort" / "dicom"), str(tmp_path / "o.csv"))
  s = session.study("S000000.dcm")
  lm = np.array(s["landmarks"])
  assert s["source"] == "template" and lm.shape == (16, 2) and s["confidence"] is None
  assert (lm >= 0).all() and (lm[:, 0] <= s["width"] - 1).all() and (lm[:, 1] <= s["height"] - 1).all()
  assert len(s["rois"]) == 14
