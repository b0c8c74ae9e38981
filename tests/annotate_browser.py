"""Headless Debian Chromium driven by Selenium, for the annotation page.

Tests use `chrome()`; `python -m tests.annotate_browser --out=docs` renders the
README's screenshots from a small synthetic cohort. Nothing is downloaded:
Selenium is pointed at /usr/bin/chromium and /usr/bin/chromedriver
(`apt-get install chromium chromium-driver`, done by .ci/run).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage")


def available() -> str:
  """'' when the browser can run, else why not."""
  missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
  if missing:
    return (f"{', '.join(missing)} missing: apt-get install -y chromium chromium-driver "
            "(.ci/run does it)")
  try:
    import selenium  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    return "selenium missing: pip install -e '.[test]'"
  return ""


@contextlib.contextmanager
def chrome(width: int = 1400, height: int = 900):
  from selenium import webdriver  # pylint: disable=import-outside-toplevel
  from selenium.webdriver.chrome.service import Service  # pylint: disable=import-outside-toplevel
  profile = tempfile.mkdtemp(prefix="bmdjax-chromium-")
  opts = webdriver.ChromeOptions()
  opts.binary_location = CHROMIUM
  for f in FLAGS:
    opts.add_argument(f)
  opts.add_argument(f"--user-data-dir={profile}")
  opts.add_argument(f"--window-size={width},{height}")
  driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
  try:
    yield driver
  finally:
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def wait_ready(driver, url: str, timeout: float = 30):
  from selenium.webdriver.support.ui import WebDriverWait  # pylint: disable=import-outside-toplevel
  driver.get(url)
  WebDriverWait(driver, timeout).until(
      lambda d: d.execute_script("return document.body.dataset.ready === '1'"))
  wait_image(driver, timeout)


def wait_image(driver, timeout: float = 30):
  """Until the film has loaded (its PNG decoded)."""
  from selenium.webdriver.support.ui import WebDriverWait  # pylint: disable=import-outside-toplevel
  WebDriverWait(driver, timeout).until(lambda d: d.execute_script(
      "const f = document.getElementById('film');"
      "try { return f.getBBox().width > 0 && f.href.baseVal !== ''; } catch (e) { return false; }"))


def screenshots(out: str, work: str) -> list[str]:
  """Two PNGs for the README: a synthetic film pre-filled with points and ROI
  boxes, and a flagged study (the detector's points failing a check)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  import pandas as pd  # pylint: disable=import-outside-toplevel
  from selenium.webdriver.support.ui import WebDriverWait  # pylint: disable=import-outside-toplevel
  from bmdjax.annotation import sources  # pylint: disable=import-outside-toplevel
  from bmdjax.annotation import server as server_lib  # pylint: disable=import-outside-toplevel
  from data_prep import synthesize  # pylint: disable=import-outside-toplevel
  cohort = os.path.join(work, "cohort")
  if not os.path.exists(os.path.join(cohort, "cohort.json")):
    synthesize.generate(cohort, patients=8, seed=11, spacing_range=(0.5, 0.6), workers=1,
                        ceiling_samples=10_000, progress=False)
  # A detector's output: truth plus noise, confidences; one study with its
  # C7 and T12 swapped and uncertain (what the checks flag).
  marks = pd.read_csv(os.path.join(cohort, "landmarks.csv"))
  rng = np.random.default_rng(0)
  cols = [f"{a}{i}" for i in range(16) for a in "xy"]
  marks[cols] = marks[cols] + rng.normal(0, 4, (len(marks), 32))
  for i in range(16):
    marks[f"conf{i}"] = np.round(rng.uniform(0.55, 0.99, len(marks)), 3)
  bad = 3
  marks.loc[bad, ["x14", "y14", "x15", "y15"]] = marks.loc[bad, ["x15", "y15", "x14",
                                                                  "y14"]].to_numpy()
  marks.loc[bad, ["conf14", "conf15"]] = [0.21, 0.34]
  marks.loc[bad, "conf2"] = 0.62
  marks["flags"] = ""
  marks.loc[bad, "flags"] = "spine: C7 is not above T12; low_confidence: c7 0.21, t12 0.34 (< 0.5)"
  marks["error"] = ""
  prefill = os.path.join(work, "landmarks_detected.csv")
  marks.to_csv(prefill, index=False)
  session = sources.make_session(os.path.join(cohort, "dicom"),
                                  os.path.join(work, "annotations.csv"), landmarks=prefill)
  server = server_lib.Server(session, port=0).start()
  paths = []
  try:
    with chrome(1500, 950) as d:
      good = marks.image[0]
      wait_ready(d, server.url + "#" + good)
      WebDriverWait(d, 20).until(lambda d: len(d.find_elements("css selector", "#rois polygon")) == 14)
      paths.append(os.path.join(out, "annotate_prefilled.png"))
      d.save_screenshot(paths[-1])
      wait_ready(d, server.url + "?" + "#" + marks.image[bad])  # a new page load
      WebDriverWait(d, 20).until(lambda d: len(d.find_elements("css selector", "#check-list li")) > 0)
      paths.append(os.path.join(out, "annotate_flagged.png"))
      d.save_screenshot(paths[-1])
  finally:
    server.stop()
  return paths


def tiny_cohort(out: str, patients: int = 5) -> str:
  """A few coarse synthetic films (fast to render and to serve)."""
  from data_prep import synthesize  # pylint: disable=import-outside-toplevel
  synthesize.generate(out, patients=patients, seed=5, spacing_range=(1.4, 1.6),
                      followup_fraction=0.0, workers=1, ceiling_samples=5_000, progress=False)
  return out


if __name__ == "__main__":
  import argparse
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--out", default="docs")
  parser.add_argument("--work", default=None, help="Scratch folder (default: a new "
                      "temporary one, so the films come from the simulator as it is now).")
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)  # Chromium's save_screenshot fails silently otherwise
  print("\n".join(screenshots(args.out, args.work or tempfile.mkdtemp(prefix="bmdjax-screens-"))))

