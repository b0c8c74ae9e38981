"""The annotation page in a real headless Chromium (Debian's, via Selenium):
what the annotator does in the page must land in the CSV."""

import csv
import os
import time

import numpy as np
import pandas as pd
import pytest

from bmdjax.annotation import sources
from bmdjax.annotation import server as server_lib
from bmdjax.annotation import store as store_lib
from tests import annotate_browser as ab

pytestmark = pytest.mark.skipif(bool(ab.available()), reason=ab.available() or "ok")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
  root = tmp_path_factory.mktemp("browser_cohort")
  ab.tiny_cohort(str(root / "cohort"), patients=4)
  (root / "secret.txt").write_text("outside the DICOM folder")
  return root


@pytest.fixture(scope="module")
def driver():
  with ab.chrome() as d:
    yield d


@pytest.fixture()
def served(cohort, tmp_path):
  session = sources.make_session(str(cohort / "cohort" / "dicom"), str(tmp_path / "out.csv"),
                                  landmarks=str(cohort / "cohort" / "landmarks.csv"))
  server = server_lib.Server(session, port=0).start()
  yield server, tmp_path / "out.csv"
  server.stop()


def rows(path):
  if not os.path.exists(path):
    return {}
  with open(path, newline="") as f:
    return {r["image"]: r for r in csv.DictReader(f)}


def wait_for(fn, timeout=20.0):
  end = time.time() + timeout
  while time.time() < end:
    value = fn()
    if value:
      return value
    time.sleep(0.1)
  raise AssertionError("timed out")


def open_study(driver, server, image):
  driver.get("about:blank")
  ab.wait_ready(driver, server.url + "#" + image)
  assert driver.find_element("id", "study-name").text == image


def points(driver):
  return np.array(driver.execute_script("return window.bmdjaxAnnotate.points"), float)


def key(driver, k):
  from selenium.webdriver.common.action_chains import ActionChains
  ActionChains(driver).send_keys(k).perform()


def test_a_dragged_point_moves_in_the_csv(driver, served, cohort):
  from selenium.webdriver.common.action_chains import ActionChains
  server, out = served
  open_study(driver, server, "S000001.dcm")
  before = points(driver)
  truth = pd.read_csv(cohort / "cohort" / "landmarks.csv").set_index("image")
  np.testing.assert_allclose(before.ravel(), truth.loc["S000001.dcm"].to_numpy(float))
  # Image pixels per screen pixel of the displayed film.
  scale = driver.execute_script(
      "return 1 / document.getElementById('canvas').getScreenCTM().a")
  circle = driver.find_element("css selector", "#points circle[data-index='8']")
  ActionChains(driver).move_to_element(circle).click_and_hold().move_by_offset(30, 20) \
      .move_by_offset(10, 10).release().perform()
  moved = points(driver)
  np.testing.assert_allclose(moved[8] - before[8], np.array([40, 30]) * scale, atol=1.5 * scale)
  key(driver, "a")  # accept
  row = wait_for(lambda: rows(out).get("S000001.dcm"))
  assert row["status"] == "accepted"
  saved = np.array(store_lib.landmarks_of(row))
  np.testing.assert_allclose(saved, moved, atol=0.005)  # what the page shows is what is saved
  others = np.arange(16) != 8
  np.testing.assert_allclose(saved[others], before[others], atol=0.005)
  # The page went on to the next study and shows the progress.
  wait_for(lambda: driver.find_element("id", "progress").text.startswith("1 / 4"))
  assert driver.find_element("id", "study-name").text != "S000001.dcm"


def test_an_unusable_mark_is_saved_with_its_reason(driver, served):
  from selenium.webdriver.support.ui import Select
  server, out = served
  open_study(driver, server, "S000002.dcm")
  key(driver, "u")
  wait_for(lambda: driver.find_element("id", "unusable-dialog").is_displayed())
  driver.find_element("id", "unusable-save").click()  # no reason: refused
  assert driver.find_element("id", "unusable-dialog").is_displayed()
  assert "S000002.dcm" not in rows(out)
  Select(driver.find_element("id", "unusable-choice")).select_by_visible_text("other")
  driver.find_element("id", "unusable-reason").send_keys("pacemaker over the left clavicle")
  driver.find_element("id", "unusable-save").click()
  row = wait_for(lambda: rows(out).get("S000002.dcm"))
  assert row["status"] == "unusable" and row["reason"] == "pacemaker over the left clavicle"
  assert row["x0"] == ""


def test_a_failing_plausibility_check_is_shown_and_saved(driver, served):
  from selenium.webdriver.common.action_chains import ActionChains
  server, out = served
  open_study(driver, server, "S000003.dcm")
  assert driver.find_element("id", "checks-ok").is_displayed()
  assert driver.find_elements("css selector", "#check-list li") == []
  # Select T12 (click its name), put the cursor above C7, press Space.
  driver.find_elements("css selector", "#landmark-list li")[15].click()
  c7 = driver.find_element("css selector", "#points circle[data-index='14']")
  ActionChains(driver).move_to_element_with_offset(c7, 0, -25).perform()
  key(driver, " ")
  items = wait_for(lambda: driver.find_elements("css selector", "#check-list li.fail"))
  texts = [i.text for i in items]
  assert any(t.startswith("spine: C7 is not above T12") for t in texts), texts
  assert not driver.find_element("id", "checks-ok").is_displayed()
  p = points(driver)
  assert p[15, 1] < p[14, 1]
  key(driver, "a")
  row = wait_for(lambda: rows(out).get("S000003.dcm"))
  assert "spine: C7 is not above T12" in row["flags"]  # accepted as the annotator decided
  np.testing.assert_allclose(np.array(store_lib.landmarks_of(row)), p, atol=0.005)


def test_the_server_refuses_a_path_outside_the_dicom_dir(driver, served):
  server, _ = served
  driver.get(server.url + "api/image?image=../secret.txt")
  assert "not found" in driver.page_source and "outside the DICOM" not in driver.page_source
  driver.get(server.url + "api/image?image=..%2F..%2Fsecret.txt")
  assert "not found" in driver.page_source
  # From the page: jumping to such a name is answered "not found", nothing opens.
  open_study(driver, server, "S000000.dcm")
  box = driver.find_element("id", "jump")
  box.send_keys("../secret.txt\n")
  wait_for(lambda: "not found" in driver.find_element("id", "message").text)
  assert driver.find_element("id", "study-name").text == "S000000.dcm"


def test_two_tabs_do_not_lose_each_others_work(driver, served):
  from selenium.webdriver.common.action_chains import ActionChains
  server, out = served
  open_study(driver, server, "S000000.dcm")
  tab1 = driver.current_window_handle
  driver.switch_to.new_window("tab")
  tab2 = driver.current_window_handle
  try:
    open_study(driver, server, "S000001.dcm")
    key(driver, "a")                                   # tab 2 saves S000001
    wait_for(lambda: "S000001.dcm" in rows(out))
    driver.switch_to.window(tab1)
    key(driver, "a")                                   # tab 1 saves S000000
    wait_for(lambda: "S000000.dcm" in rows(out))
    assert set(rows(out)) == {"S000000.dcm", "S000001.dcm"}
    # Both tabs open S000002; tab 1 moves a point and saves; tab 2, stale, saves too.
    open_study(driver, server, "S000002.dcm")
    driver.switch_to.window(tab2)
    open_study(driver, server, "S000002.dcm")
    driver.switch_to.window(tab1)
    circle = driver.find_element("css selector", "#points circle[data-index='0']")
    ActionChains(driver).move_to_element(circle).click_and_hold().move_by_offset(25, 0) \
        .release().perform()
    moved = points(driver)
    key(driver, "a")
    wait_for(lambda: "S000002.dcm" in rows(out))
    driver.switch_to.window(tab2)
    key(driver, "a")
    wait_for(lambda: "another tab" in driver.find_element("id", "message").text)
    saved = rows(out)["S000002.dcm"]
    assert saved["revision"] == "1"
    np.testing.assert_allclose(np.array(store_lib.landmarks_of(saved)), moved, atol=0.005)
    # Tab 2 now shows the saved version (and can go on from it).
    np.testing.assert_allclose(points(driver), moved, atol=0.005)
    assert set(rows(out)) == {"S000000.dcm", "S000001.dcm", "S000002.dcm"}
  finally:
    driver.switch_to.window(tab2)
    driver.close()
    driver.switch_to.window(tab1)


def test_zoom_pan_and_window_keep_points_where_they_belong(driver, served):
  from selenium.webdriver.common.action_chains import ActionChains
  server, out = served
  open_study(driver, server, "S000000.dcm")
  ctm = lambda: driver.execute_script(
      "const m = document.getElementById('canvas').getScreenCTM(); return [m.a, m.e, m.f];")
  a0 = ctm()[0]
  key(driver, "+")
  key(driver, "+")
  a1, e1, f1 = ctm()
  assert a1 == pytest.approx(a0 * 1.25 ** 2, rel=1e-6)
  # Pan by dragging the film (not a point): the view shifts by the drag.
  film = driver.find_element("id", "canvas")
  ActionChains(driver).move_to_element_with_offset(film, -200, 200).click_and_hold() \
      .move_by_offset(-60, 0).release().perform()
  a2, e2, f2 = ctm()
  assert a2 == pytest.approx(a1) and e2 - e1 == pytest.approx(-60, abs=1)
  # A drag at this zoom moves the point by screen pixels / zoom.
  before = points(driver)
  circle = driver.find_element("css selector", "#points circle[data-index='6']")
  ActionChains(driver).move_to_element(circle).click_and_hold().move_by_offset(20, -15) \
      .release().perform()
  np.testing.assert_allclose(points(driver)[6] - before[6], np.array([20, -15]) / a2,
                             atol=1.5 / a2)
  # Window: the film's filter maps [low, high] to [0, 1].
  driver.execute_script(
      "for (const [id, v] of [['win-lo', 51], ['win-hi', 204]]) {"
      "  const e = document.getElementById(id); e.value = v;"
      "  e.dispatchEvent(new Event('input')); }")
  slope = float(driver.find_element("id", "fr").get_attribute("slope"))
  intercept = float(driver.find_element("id", "fr").get_attribute("intercept"))
  assert slope * 51 / 255 + intercept == pytest.approx(0.0, abs=1e-9)
  assert slope * 204 / 255 + intercept == pytest.approx(1.0, abs=1e-9)
  key(driver, "0")
  assert ctm()[0] == pytest.approx(a0, rel=1e-6)
