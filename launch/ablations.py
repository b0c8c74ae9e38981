r"""Runs the paper's comparison tables (I, III, IV) and assembles them.

  python -m launch.ablations --table=1 --data=PREPARED --workdir=ROOT
  python -m launch.ablations --table=4 --data=PREPARED --workdir=ROOT --config_arg=demo
  python -m launch.ablations --table=3 --data=D --workdir=R --print > jobs.txt
  python -m launch.ablations --table=1 --data=D --workdir=R --collect_only

Tables (rows; every row is trained once per target vertebra, as the paper does):
  1  Baseline, MulPat, AttMulPat, MulRoi, AttMulRoi ("Ours"); VGG16, patch grid 3.
  3  Baseline with VGG13, VGG16, VGG19, ResNet18, ResNet34, ResNet50
     (+ ResNet101 with --resnet101; the paper's Table III has that row too).
  4  MulPat with a 2x2, 3x3 and 4x4 patch grid (+ the "Ours" row read from
     Table I's AttMulRoi runs under the same ROOT, if they exist).

One run = `python -m bmdjax.train` then `python -m bmdjax.evaluate --split=test`,
each a subprocess, in ROOT/table<N>/<row>_<target> (e.g. ROOT/table1/mulpat_L2),
with its output in that folder's ablation.log and its timing in ablation.json.
A run whose report/metrics.json exists is skipped; one with checkpoints but no
report is resumed (bmdjax.train resumes by itself) and then evaluated. A failed
run does not stop the others: failures are listed at the end (exit status 1).
Afterwards (or with --collect_only) ROOT/table<N>/table.md and table.json hold
the paper's layout: a row per model/backbone/grid; R-value, RMSE, AUC for L1-L4
and Avg (mean of the four, only where all four are present); missing runs
are blank cells, metrics that are undefined (e.g. AUC without a positive) "—".

--targets=all trains one four-output model (target=all) per row instead; a
cell comes from the per-vertebra run if there is one, else from the all run.
--set=optim.lr=1e-3 adds --config.optim.lr=1e-3 to every train/evaluate command.
--print writes one shell line per pending run (train && evaluate) for a job
array; the runs it lists can be collected here later with --collect_only.
With --reuse (default) a run whose exact commands already finished in another
table under ROOT (Table III VGG16 = Table I Baseline, Table IV 3x3 = Table I
MulPat) is not trained again; its report is used.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from bmdjax import cli
from launch import ablation_tables as tables

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_list("table", None, "Which table: 1, 3 or 4 (or a list, e.g. 1,3,4).")
  flags.DEFINE_string("data", None, "Prepared dataset (output of bmdjax prepare).")
  flags.DEFINE_string("workdir", None, "Root of the runs: ROOT/table<N>/<row>_<target>.")
  flags.DEFINE_bool("print", False, "Only print one shell line per pending run.")
  flags.DEFINE_bool("collect_only", False, "Only (re)write table.md/table.json.")
  flags.DEFINE_string("config_arg", "", "Config arguments put before each row's, "
                      "e.g. demo for CPU-sized runs.")
  flags.DEFINE_list("targets", list(tables.VERTEBRAE), "Target vertebrae (one model each), "
                    "or 'all' for one four-output model per row.")
  flags.DEFINE_multi_string("set", [], "key=value: adds --config.key=value to every "
                            "train and evaluate command (repeatable).")
  flags.DEFINE_integer("bootstrap", None, "Passed to bmdjax.evaluate --bootstrap "
                       "(default: evaluate's own).")
  flags.DEFINE_bool("resnet101", False, "Table 3: also the ResNet101 row.")
  flags.DEFINE_bool("reuse", True, "Reuse a finished identical run of another table "
                    "under the same ROOT instead of training it again.")
  flags.DEFINE_string("python", None, "Python in the commands (default: this one; "
                      "'python' with --print).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.table or not FLAGS.workdir:
    raise app.UsageError("--table and --workdir are required")
  try:
    numbers = [int(t) for t in FLAGS.table]
    for t in numbers:
      tables.rows_of(t)
    targets = tables.parse_targets(FLAGS.targets)
    tables.config_overrides(FLAGS.set)
  except ValueError as e:
    raise app.UsageError(str(e))
  if not FLAGS.collect_only and not FLAGS.data:
    raise app.UsageError("--data is required (except with --collect_only)")

  if FLAGS.print:
    python = FLAGS.python or "python"
    done = 0
    for t in numbers:
      runs = tables.plan(t, FLAGS.workdir, targets, FLAGS.config_arg, FLAGS.resnet101)
      try:
        tables.check_grids(FLAGS.data, runs, FLAGS.set, t, missing_ok=True)
      except tables.MissingGridsError as e:
        tables.say(f"error: {e}")
        return 2
      for run in runs:
        if tables.result_dir(run.workdir):
          done += 1
          continue
        print(tables.shell_line(run, FLAGS.data, FLAGS.set, python, FLAGS.bootstrap))
    if done:
      tables.say(f"({done} run(s) with a report left out)")
    if not os.path.exists(os.path.join(FLAGS.data, "prep.json")):
      tables.say(f"note: {FLAGS.data}/prep.json not readable here; patch grids not checked")
    return 0

  failures = []
  for t in numbers:
    if FLAGS.collect_only:
      result = tables.collect(t, FLAGS.workdir, resnet101=FLAGS.resnet101)
    else:
      try:
        out = tables.run_table(t, FLAGS.data, FLAGS.workdir, targets=targets,
                               config_arg=FLAGS.config_arg, sets=FLAGS.set,
                               python=FLAGS.python or sys.executable,
                               bootstrap=FLAGS.bootstrap, resnet101=FLAGS.resnet101,
                               reuse=FLAGS.reuse)
      except tables.MissingGridsError as e:
        tables.say(f"error: {e}")
        return 2
      result = out["table"]
      failures += out["failures"]
    print(tables.render_markdown(result))
    written = os.path.join(tables.table_dir(result["root"], t), "table.md")
    print(f"written: {written} and table.json")
  if failures:
    tables.say(f"\n{len(failures)} run(s) failed:")
    for r in failures:
      tables.say(f"  {r['name']}: {r['failed']} exited {r['rc']}; log {r['log']}")
    return 1
  return 0


if __name__ == "__main__":
  cli.run(main, define_flags, doc=__doc__)
