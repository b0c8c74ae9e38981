r"""Learning curve of the landmark detector on a site's own annotations.

  python -m launch.learning_curve --out=lc_out [--n=0,10,30,100] [--steps=150]

What a site asks before annotating: how many corrected studies does the
pre-trained detector need to work on films that look unlike its training
films? This script answers it on synthetic data:
  1. cohort A (seed 1, the default rendering) -> pre-train the demo detector;
  2. cohort B (seed 2, rendered differently: finer pixels, lower bone contrast,
     darker gamma, more noise, larger rotation, body size and off-centring);
  3. B's patients are split once into a held-out test set, a small validation
     set (picks the best checkpoint, as a site would) and a training pool;
  4. for each N: fine-tune the pre-trained detector (`config.init_from`) on the
     first N pool studies, and train one from scratch on the same N with the
     same steps and settings;
  5. MRE (mm) on B's held-out studies for each run (N = 0: the pre-trained
     detector as it is). Writes OUT/learning_curve.md and .json.
Every step already done is skipped, so an interrupted run resumes.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

from absl import app, flags
import numpy as np
import pandas as pd

FLAGS = flags.FLAGS
CONFIG = "configs/landmarks.py:demo"
SIZE = 128  # the demo detector's letterbox
# Cohort B's rendering (data_prep.synthesize.RENDER overrides).
RENDER_B = dict(bone_mu=0.007, gamma=(0.55, 0.75), noise=(0.02, 0.035),
                rotation_deg=6.0, body_scale=(1.0, 0.1), translation_mm=25.0,
                knee=(0.9, 0.25))


def _run(*args):
  print("+", " ".join(args), flush=True)
  subprocess.run([sys.executable, "-m", *args], check=True)


def synthesize(out: str, patients: int, seed: int, spacing: str, render: dict | None):
  if os.path.exists(os.path.join(out, "cohort.json")):
    return
  from data_prep import synthesize as synth  # pylint: disable=import-outside-toplevel
  synth.RENDER.update(render or {})
  lo, hi = (float(v) for v in spacing.split(","))
  # One process: the RENDER overrides live in this interpreter only.
  synth.generate(out, patients, seed, (lo, hi), workers=1, ceiling_samples=10_000)


def build(cohort: str, landmarks: str, labels: str, out: str):
  if not os.path.exists(os.path.join(out, "manifest.csv")):
    _run("bmdjax.prepare_landmarks", f"--dicom_dir={cohort}/dicom",
         f"--landmarks={landmarks}", f"--labels={labels}", f"--out={out}",
         f"--size={SIZE}", "--workers=1")


def train(data: str, workdir: str, steps: int, n_train: int, init_from: str = "",
          lr: float | None = None):
  if os.path.exists(os.path.join(workdir, "best.json")) and os.path.exists(
      os.path.join(workdir, "done")):
    return
  per_epoch = max(n_train // 16, 1)
  epochs = max(math.ceil(steps / per_epoch), 1)
  _run("bmdjax.train", f"--config={CONFIG}", f"--workdir={workdir}",
       f"--config.data.dir={data}", f"--config.num_epochs={epochs}",
       f"--config.eval_every_epochs={max(epochs // 10, 1)}",
       f"--config.init_from={init_from}", "--verbosity=-1",
       *([f"--config.optim.lr={lr}"] if lr else []))
  open(os.path.join(workdir, "done"), "w").close()


def evaluate(workdir: str, cohort: str, truth: str) -> float:
  out = os.path.join(workdir, "eval_b")
  path = os.path.join(out, "metrics.json")
  if not os.path.exists(path):
    _run("bmdjax.landmark_eval", f"--workdir={workdir}", f"--dicom_dir={cohort}/dicom",
         f"--landmarks={truth}", f"--out={out}", "--worst=2")
  with open(path) as f:
    m = json.load(f)
  o = m["overall"]
  return {"mre_mm": o["mre_mm"], "sdr_4mm": o["sdr_4mm"], "studies": m["studies"],
          "flagged": m["flagged_studies"]}


def split_b(cohort: str, n_test: int, n_val: int, seed: int = 0):
  """Patient-level: test, validation, then the training pool, in a fixed order."""
  labels = pd.read_csv(os.path.join(cohort, "labels.csv"), dtype=str)
  patients = labels.patient_id.unique()
  np.random.default_rng(seed).shuffle(patients)
  order = {p: i for i, p in enumerate(patients)}
  labels = labels.assign(rank=labels.patient_id.map(order)).sort_values(["rank", "image"])
  parts = {"test": [], "validation": [], "pool": []}
  for _, rows in labels.groupby("rank", sort=True):
    key = ("test" if len(parts["test"]) < n_test else
           "validation" if len(parts["validation"]) < n_val else "pool")
    parts[key] += list(rows.image)
  return parts, labels


def main(argv):
  del argv
  out = FLAGS.out
  os.makedirs(out, exist_ok=True)
  a, b = os.path.join(out, "cohort_a"), os.path.join(out, "cohort_b")
  synthesize(a, FLAGS.patients_a, 1, "1.0,1.2", None)
  synthesize(b, FLAGS.patients_b, 2, "0.8,1.0", RENDER_B)

  build(a, f"{a}/landmarks.csv", f"{a}/labels.csv", os.path.join(out, "prep_a"))
  with open(os.path.join(out, "prep_a", "prep.json")) as f:
    n_a = json.load(f)["counts"]["train"]
  pre = os.path.join(out, "pretrained")
  train(os.path.join(out, "prep_a"), pre, FLAGS.pretrain_steps, n_a)

  parts, labels = split_b(b, FLAGS.test, FLAGS.val)
  truth = pd.read_csv(os.path.join(b, "landmarks.csv"), dtype=str).set_index("image")
  test_csv = os.path.join(out, "b_test_landmarks.csv")
  truth.loc[parts["test"]].reset_index().to_csv(test_csv, index=False)
  ns = [int(n) for n in FLAGS.n]
  if max(ns) > len(parts["pool"]):
    raise SystemExit(f"cohort B's pool holds {len(parts['pool'])} studies, fewer than "
                     f"N = {max(ns)}: raise --patients_b")
  zero = evaluate(pre, b, test_csv)
  n_test = zero["studies"]
  rows = [dict(n=0, fine_tuned=zero, scratch=None)]
  for n in [n for n in ns if n > 0]:
    images = parts["pool"][:n] + parts["validation"]
    split = {im: "train" for im in parts["pool"][:n]}
    split.update({im: "validation" for im in parts["validation"]})
    lab = labels[labels.image.isin(images)][["patient_id", "image"]].assign(
        split=lambda d: d.image.map(split))
    lab_csv, lm_csv = (os.path.join(out, f"b_{n}_{k}.csv") for k in ("labels", "landmarks"))
    lab.to_csv(lab_csv, index=False)
    truth.loc[images].reset_index().to_csv(lm_csv, index=False)
    data = os.path.join(out, f"prep_b_{n}")
    build(b, lm_csv, lab_csv, data)
    row = dict(n=n)
    for arm, init, lr in (("fine_tuned", pre, FLAGS.finetune_lr), ("scratch", "", None)):
      work = os.path.join(out, f"{arm}_{n}")
      train(data, work, FLAGS.steps, n, init, lr)
      row[arm] = evaluate(work, b, test_csv)
    rows.append(row)
  result = dict(settings=dict(config=CONFIG, steps=FLAGS.steps, finetune_lr=FLAGS.finetune_lr,
                              pretrain_steps=FLAGS.pretrain_steps,
                              patients_a=FLAGS.patients_a, patients_b=FLAGS.patients_b,
                              render_b=RENDER_B, test_studies=n_test,
                              validation_studies=len(parts["validation"])),
                rows=rows)
  with open(os.path.join(out, "learning_curve.json"), "w") as f:
    json.dump(result, f, indent=2)
  def fmt(m):
    return "n/a" if m is None else f"{m['mre_mm']:.2f} mm, {100 * m['sdr_4mm']:.0f}%"
  lines = [f"MRE and share of points within 4 mm on {n_test} held-out studies of cohort B",
           "", "| N (cohort B studies) | fine-tuned from A (`init_from`) | from scratch |",
           "|---|---|---|"]
  lines += [f"| {r['n']} | {fmt(r['fine_tuned'])} | {fmt(r['scratch'])} |" for r in rows]
  text = "\n".join(lines) + "\n"
  with open(os.path.join(out, "learning_curve.md"), "w") as f:
    f.write(text)
  print(text)


if __name__ == "__main__":
  flags.DEFINE_string("out", "lc_out", "Working folder (cohorts, runs, table).")
  flags.DEFINE_list("n", ["0", "10", "30", "100"], "Cohort-B training set sizes.")
  flags.DEFINE_integer("patients_a", 300, "Patients of the pre-training cohort A.")
  flags.DEFINE_integer("patients_b", 220, "Patients of cohort B.")
  flags.DEFINE_integer("test", 80, "Held-out cohort-B studies (MRE measured on them).")
  flags.DEFINE_integer("val", 20, "Cohort-B validation studies (best checkpoint).")
  flags.DEFINE_integer("steps", 150, "Training steps of every fine-tuning/scratch run.")
  flags.DEFINE_integer("pretrain_steps", 300, "Training steps of the detector on A.")
  flags.DEFINE_float("finetune_lr", None, "Learning rate of the fine-tuning runs "
                     "(default: the config's, as for training from scratch).")
  app.run(main)
