"""The paper's comparison tables (I, III, IV) as runs: which runs a table needs
(`plan`), their commands, running them as subprocesses with reuse and resume
(`run_table`), and collecting their reports into the paper's layout (`collect`,
`render_markdown`). The command is launch/ablations.py."""


from __future__ import annotations

import dataclasses
import datetime
import glob
import json
import math
import os
import shlex
import subprocess
import sys
import time
from typing import Callable, Sequence

from configs import common

VERTEBRAE = common.VERTEBRAE
TARGETS = VERTEBRAE + ("all",)
METRICS = (("r", "R"), ("rmse", "RMSE"), ("auc", "AUC"))
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_JSON = "ablation.json"  # beside bmdjax.train's run.json, which it must not replace
LOG_NAME = "ablation.log"


@dataclasses.dataclass(frozen=True)
class Row:
  name: str   # folder prefix: ROOT/table<N>/<name>_<target>
  label: str  # the row's label in table.md
  model: str  # configs/<model>.py
  args: str   # config arguments of the row (before the target)


TABLES = {
    1: dict(title="Table I: model comparison (VGG16 feature extractor; patch grid 3x3)",
            first="Model",
            rows=[Row("baseline", "Baseline", "baseline", ""),
                  Row("mulpat", "MulPat", "mulpat", "grid=3"),
                  Row("attmulpat", "AttMulPat", "attmulpat", "grid=3"),
                  Row("mulroi", "MulRoi", "mulroi", ""),
                  Row("attmulroi", "Ours (AttMulRoi)", "attmulroi", "")]),
    3: dict(title="Table III: backbones of the Baseline model",
            first="Backbone",
            rows=[Row("vgg13", "VGG13", "baseline", "backbone=vgg13"),
                  Row("vgg16", "VGG16", "baseline", "backbone=vgg16"),
                  Row("vgg19", "VGG19", "baseline", "backbone=vgg19"),
                  Row("resnet18", "ResN18", "baseline", "backbone=resnet18"),
                  Row("resnet34", "ResN34", "baseline", "backbone=resnet34"),
                  Row("resnet50", "ResN50", "baseline", "backbone=resnet50")]),
    4: dict(title="Table IV: patch grid of the MulPat model",
            first="Patch",
            rows=[Row("grid2", "2 x 2", "mulpat", "grid=2"),
                  Row("grid3", "3 x 3", "mulpat", "grid=3"),
                  Row("grid4", "4 x 4", "mulpat", "grid=4")]),
}
RESNET101 = Row("resnet101", "ResN101", "baseline", "backbone=resnet101")
# Table IV of the paper repeats "Ours" for reference: read from Table I's runs.
TABLE4_REFERENCE = (1, Row("attmulroi", "Ours (AttMulRoi, from Table I)", "attmulroi", ""))


class MissingGridsError(ValueError):
  """The prepared dataset lacks the patch grids some runs read."""


# ----------------------------------------------------------------- plan


@dataclasses.dataclass(frozen=True)
class Run:
  table: int
  row: Row
  target: str
  config: str   # configs/<model>.py:<args>
  workdir: str

  @property
  def name(self) -> str:
    return f"{self.row.name}_{self.target}"


def table_dir(root: str, table: int) -> str:
  return os.path.join(root, f"table{table}")


def rows_of(table: int, resnet101: bool = False) -> list[Row]:
  if table not in TABLES:
    raise ValueError(f"unknown table {table!r}: choose one of {sorted(TABLES)}")
  rows = list(TABLES[table]["rows"])
  if table == 3 and resnet101:
    rows.append(RESNET101)
  return rows


def parse_targets(targets) -> list[str]:
  if isinstance(targets, str):
    targets = targets.split(",")
  out = []
  for t in targets:
    t = t.strip()
    if not t:
      continue
    if t not in TARGETS:
      raise ValueError(f"unknown target {t!r}: use L1,L2,L3,L4 (any of them) or all")
    if t not in out:
      out.append(t)
  if not out:
    raise ValueError("no target given")
  return out


def config_args(config_arg: str, row: Row, target: str) -> str:
  return ",".join(a for a in ((config_arg or "").strip(" ,"), row.args,
                              f"target={target}") if a)


def plan(table: int, root: str, targets=VERTEBRAE, config_arg: str = "",
         resnet101: bool = False) -> list[Run]:
  """Every run of `table`: rows in the paper's order, targets within a row."""
  runs = []
  for row in rows_of(table, resnet101):
    for target in parse_targets(targets):
      runs.append(Run(table, row, target,
                      f"configs/{row.model}.py:{config_args(config_arg, row, target)}",
                      os.path.join(table_dir(root, table), f"{row.name}_{target}")))
  return runs


def config_overrides(sets: Sequence[str]) -> list[str]:
  """["optim.lr=1e-3"] -> ["--config.optim.lr=1e-3"]."""
  out = []
  for s in sets or ():
    key, eq, value = s.partition("=")
    key = key.strip()
    if key.startswith("config."):
      key = key[len("config."):]
    if not eq or not key:
      raise ValueError(f"--set takes key=value (a config field), got {s!r}")
    out.append(f"--config.{key}={value}")
  return out


def train_command(run: Run, data: str, sets=(), python: str = "python") -> list[str]:
  return [python, "-m", "bmdjax.train", f"--config={run.config}",
          f"--workdir={run.workdir}", f"--config.data.dir={data}",
          *config_overrides(sets)]


def eval_command(run: Run, data: str, sets=(), python: str = "python",
                 bootstrap: int | None = None) -> list[str]:
  cmd = [python, "-m", "bmdjax.evaluate", f"--config={run.config}",
         f"--workdir={run.workdir}", f"--config.data.dir={data}",
         *config_overrides(sets), "--split=test"]
  if bootstrap is not None:
    cmd.append(f"--bootstrap={bootstrap}")
  return cmd


def shell_line(run: Run, data: str, sets=(), python: str = "python",
               bootstrap: int | None = None) -> str:
  """One job-array line: train, then evaluate if training succeeded."""
  return " && ".join(shlex.join(c) for c in (
      train_command(run, data, sets, python),
      eval_command(run, data, sets, python, bootstrap)))


# ----------------------------------------------------------------- grids


def required_grids(runs: Sequence[Run], sets=()) -> dict[int, list[str]]:
  """{grid: [run names]} of the runs reading patches (after --set data.grid=)."""
  grid_override = None
  for s in sets or ():
    key, _, value = s.partition("=")
    if key.strip().removeprefix("config.") == "data.grid":
      grid_override = int(value)
  need: dict[int, list[str]] = {}
  for run in runs:
    config = common.get_config(run.row.model, run.config.partition(":")[2])
    if config.data.inputs != "patches":
      continue
    grid = grid_override if grid_override is not None else int(config.data.grid)
    need.setdefault(grid, []).append(run.name)
  return need


def check_grids(data: str, runs: Sequence[Run], sets=(), table: int | None = None,
                missing_ok: bool = False) -> None:
  """Raises MissingGridsError unless DATA/prep.json lists every grid needed."""
  need = required_grids(runs, sets)
  path = os.path.join(data, "prep.json")
  if not os.path.exists(path):
    if missing_ok:
      return
    raise MissingGridsError(f"{path} not found: --data must be a folder written by "
                            "bmdjax prepare")
  with open(path) as f:
    have = {int(g) for g in json.load(f).get("grids", [])}
  missing = sorted(set(need) - have)
  if missing:
    what = f"Table {table}" if table else "these runs"
    users = sorted({n for g in missing for n in need[g]})
    all_grids = ",".join(str(g) for g in sorted(have | set(need)))
    raise MissingGridsError(
        f"{what} needs patch grid(s) {', '.join(f'{g}x{g}' for g in missing)} "
        f"(patches_{'/'.join(str(g) for g in missing)}, read by {', '.join(users)}), "
        f"but {data} was prepared with --grids={','.join(str(g) for g in sorted(have))}. "
        f"Rebuild it into a new folder with data_prep.build ... --grids={all_grids}.")


# ----------------------------------------------------------------- run


def _read_json(path):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _write_json(path, obj):
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)


def metrics_path(workdir: str) -> str:
  return os.path.join(workdir, "report", "metrics.json")


def has_checkpoints(workdir: str) -> bool:
  d = os.path.join(workdir, "checkpoints")
  return os.path.isdir(d) and any(not n.startswith(".") for n in os.listdir(d))


def result_dir(workdir: str) -> str | None:
  """The run folder whose report holds this run's metrics (itself or, for a
  reused run, the run it reuses), or None while there is no report."""
  if os.path.exists(metrics_path(workdir)):
    return workdir
  info = _read_json(os.path.join(workdir, RUN_JSON)) or {}
  src = info.get("reused_from")
  if src and os.path.exists(metrics_path(src)):
    return src
  return None


def _identity(train_cmd: list[str]) -> list[str]:
  """What makes two runs the same: the train command without python and
  workdir, with --config resolved (so `backbone=vgg16,target=L1` and
  `target=L1` of the same model are one run)."""
  out = []
  for a in train_cmd[1:]:
    if a.startswith("--workdir="):
      continue
    if a.startswith("--config="):
      path, _, args = a[len("--config="):].partition(":")
      model = os.path.splitext(os.path.basename(path))[0]
      try:
        a = f"{model}:" + common.get_config(model, args).to_json(sort_keys=True)
      except Exception:  # an unknown model or argument: compare the text
        pass
    out.append(a)
  return out


def find_equivalent(root: str, run: Run, train_cmd: list[str]) -> str | None:
  """A finished run under ROOT (another table) trained with the same command."""
  want = _identity(train_cmd)
  for path in sorted(glob.glob(os.path.join(root, "table*", "*", RUN_JSON))):
    workdir = os.path.dirname(path)
    if os.path.abspath(workdir) == os.path.abspath(run.workdir):
      continue
    info = _read_json(path) or {}
    if (info.get("train_cmd") and _identity(info["train_cmd"]) == want
        and os.path.exists(metrics_path(workdir))):
      return workdir
  return None


def subprocess_runner(cmd: list[str], log_path: str, cwd: str) -> int:
  """Runs one command, appending its output to log_path; returns its exit code."""
  with open(log_path, "a") as log:
    log.write(f"\n==== {datetime.datetime.now().isoformat(timespec='seconds')} "
              f"{shlex.join(cmd)}\n")
    log.flush()
    return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd).returncode


def say(msg):
  print(msg, file=sys.stderr, flush=True)


def run_one(run: Run, data: str, sets=(), *, runner: Callable = subprocess_runner,
            python: str = sys.executable, bootstrap: int | None = None,
            root: str | None = None, reuse: bool = True) -> dict:
  """Trains (or resumes) and evaluates one run unless its report exists.

  Returns {"name", "status": done|skipped|reused|failed, "log", ...}; the
  timing of every attempt is kept in WORKDIR/ablation.json.
  """
  os.makedirs(run.workdir, exist_ok=True)
  log = os.path.join(run.workdir, LOG_NAME)
  info_path = os.path.join(run.workdir, RUN_JSON)
  info = _read_json(info_path) or {}
  train_cmd = train_command(run, data, sets, python)
  eval_cmd = eval_command(run, data, sets, python, bootstrap)
  base = {"name": run.name, "workdir": run.workdir, "log": log}

  if result_dir(run.workdir):
    old = info.get("train_cmd")
    if old and _identity(old) != _identity(train_cmd):
      say(f"  warning: {run.name} has a report made with a different command "
           f"({shlex.join(old[1:])}); kept. Delete {run.workdir} to rerun it.")
    return {**base, "status": "skipped"}

  if reuse and root and not has_checkpoints(run.workdir):
    src = find_equivalent(root, run, train_cmd)
    if src:
      info.update(table=run.table, row=run.row.name, target=run.target,
                  config=run.config, train_cmd=train_cmd, eval_cmd=eval_cmd,
                  status="reused", reused_from=os.path.abspath(src))
      _write_json(info_path, info)
      return {**base, "status": "reused", "reused_from": src}

  resumed = has_checkpoints(run.workdir)
  attempt = {"start": datetime.datetime.now().isoformat(timespec="seconds"),
             "resumed": resumed}
  info.update(table=run.table, row=run.row.name, target=run.target, config=run.config,
              train_cmd=train_cmd, eval_cmd=eval_cmd, log=log, status="running",
              reused_from=None)
  info.setdefault("attempts", []).append(attempt)
  _write_json(info_path, info)

  failed = None
  for stage, cmd in (("train", train_cmd), ("evaluate", eval_cmd)):
    t0 = time.time()
    try:
      rc = runner(cmd, log, REPO_ROOT)
    except Exception as e:  # the runner itself broke: report, go on with the rest
      rc = f"{type(e).__name__}: {e}"
    attempt[f"{stage}_s"] = round(time.time() - t0, 1)
    if rc != 0:
      failed = stage
      attempt["failed"] = stage
      attempt["rc"] = rc
      break
  if failed is None and not os.path.exists(metrics_path(run.workdir)):
    failed = "evaluate"
    attempt["failed"] = "evaluate wrote no report/metrics.json"
  attempt["wall_s"] = round(attempt.get("train_s", 0) + attempt.get("evaluate_s", 0), 1)
  info["wall_s"] = round(sum(a.get("wall_s", 0) for a in info["attempts"]), 1)
  info["status"] = "failed" if failed else "done"
  _write_json(info_path, info)
  out = {**base, "status": info["status"], "wall_s": attempt["wall_s"],
         "resumed": resumed}
  if failed:
    out["failed"] = failed
    out["rc"] = attempt.get("rc")
  return out


def run_table(table: int, data: str, root: str, *, targets=VERTEBRAE,
              config_arg: str = "", sets=(), runner: Callable = subprocess_runner,
              python: str = sys.executable, bootstrap: int | None = None,
              resnet101: bool = False, reuse: bool = True, collect_table: bool = True) -> dict:
  """Runs every pending run of `table` in turn, then writes its table.

  Returns {"runs": [run_one results], "failures": [...], "table": collect()}.
  Raises MissingGridsError before running anything if DATA lacks a patch grid.
  """
  data, root = os.path.abspath(data), os.path.abspath(root)
  runs = plan(table, root, targets, config_arg, resnet101)
  check_grids(data, runs, sets, table)
  results = []
  for i, run in enumerate(runs, 1):
    state = ("done" if result_dir(run.workdir) else
             "resuming" if has_checkpoints(run.workdir) else "starting")
    if state != "done":
      say(f"[table {table} {i}/{len(runs)}] {state} {run.name}: log "
           f"{os.path.join(run.workdir, LOG_NAME)}")
    res = run_one(run, data, sets, runner=runner, python=python, bootstrap=bootstrap,
                  root=root, reuse=reuse)
    if res["status"] == "skipped":
      say(f"[table {table} {i}/{len(runs)}] {run.name}: report exists, skipped")
    elif res["status"] == "reused":
      say(f"[table {table} {i}/{len(runs)}] {run.name}: same run finished in "
           f"{res['reused_from']}, reused")
    else:
      say(f"[table {table} {i}/{len(runs)}] {run.name}: {res['status']} in "
           f"{format_seconds(res['wall_s'])}" +
           (f" ({res['failed']} failed, exit {res['rc']}; see {res['log']})"
            if res["status"] == "failed" else ""))
    results.append(res)
  failures = [r for r in results if r["status"] == "failed"]
  out = {"runs": results, "failures": failures}
  if collect_table:
    out["table"] = collect(table, root, resnet101=resnet101)
  return out


# ----------------------------------------------------------------- collect


def format_seconds(s) -> str:
  if s is None:
    return ""
  s = float(s)
  if s < 60:
    return f"{s:.1f} s"
  m, sec = divmod(int(round(s)), 60)
  h, m = divmod(m, 60)
  return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s"


def _number(x):
  return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


def _cells(root: str, table: int, row: Row) -> tuple[dict, list]:
  """{vertebra: {r, rmse, auc, n, source}} of one row, and its run records."""
  tdir = table_dir(root, table)
  cells, runs = {}, []
  for target in TARGETS:
    workdir = os.path.join(tdir, f"{row.name}_{target}")
    info = _read_json(os.path.join(workdir, RUN_JSON))
    src = result_dir(workdir)
    if info is None and src is None and not os.path.isdir(workdir):
      continue
    if src:
      status = "reused" if os.path.abspath(src) != os.path.abspath(workdir) else "done"
    elif info and info.get("status") == "failed":
      status = "failed"
    elif has_checkpoints(workdir):
      status = "incomplete"
    else:
      status = (info or {}).get("status") or "not run"
    runs.append({"row": row.name, "target": target, "workdir": workdir,
                 "status": status, "wall_s": None if status == "reused" else
                 (info or {}).get("wall_s"),
                 "attempts": len((info or {}).get("attempts", [])),
                 "reused_from": src if status == "reused" else None,
                 "log": os.path.join(workdir, LOG_NAME)})
    if not src:
      continue
    metrics = _read_json(metrics_path(src)) or {}
    for v in VERTEBRAE if target == "all" else (target,):
      if v not in metrics or (v in cells and target == "all"):
        continue  # a per-vertebra run wins over the four-output run
      m = metrics[v]
      cells[v] = {k: _number(m.get(k)) for k, _ in METRICS}
      cells[v]["n"] = m.get("n")
      cells[v]["source"] = metrics_path(src)
  return cells, runs


def _average(cells: dict) -> dict | None:
  if not all(v in cells for v in VERTEBRAE):
    return None
  avg = {}
  for k, _ in METRICS:
    values = [cells[v][k] for v in VERTEBRAE]
    avg[k] = None if any(x is None for x in values) else float(sum(values) / len(values))
  return avg


def collect(table: int, root: str, resnet101: bool = False, write: bool = True) -> dict:
  """Assembles ROOT/table<N>/table.json and table.md from the runs' reports."""
  root = os.path.abspath(root)
  spec = TABLES[table]
  rows = list(rows_of(table, resnet101))
  if table == 3 and not resnet101 and os.path.isdir(table_dir(root, 3)) and any(
      n.startswith(RESNET101.name + "_") for n in os.listdir(table_dir(root, 3))):
    rows.append(RESNET101)
  entries, all_runs = [], []
  for row in rows:
    cells, runs = _cells(root, table, row)
    avg = _average(cells)
    if avg is not None:
      cells["Avg"] = avg
    entries.append({"name": row.name, "label": row.label, "model": row.model,
                    "args": row.args, "cells": cells})
    all_runs += runs
  if table == 4:  # the paper's reference row, read from Table I's runs
    ref_table, row = TABLE4_REFERENCE
    cells, _ = _cells(root, ref_table, row)
    avg = _average(cells)
    if avg is not None:
      cells["Avg"] = avg
    entries.append({"name": row.name, "label": row.label, "model": row.model,
                    "args": row.args, "cells": cells, "reference": f"table{ref_table}"})
  timed = [r["wall_s"] for r in all_runs if r["wall_s"]]
  result = {"table": table, "title": spec["title"], "first_column": spec["first"],
            "root": root, "columns": list(VERTEBRAE) + ["Avg"],
            "metrics": [k for k, _ in METRICS], "rows": entries, "runs": all_runs,
            "total_wall_s": round(sum(timed), 1) if timed else None}
  if write:
    tdir = table_dir(root, table)
    os.makedirs(tdir, exist_ok=True)
    _write_json(os.path.join(tdir, "table.json"), result)
    with open(os.path.join(tdir, "table.md"), "w") as f:
      f.write(render_markdown(result))
  return result


def _fmt(cell: dict | None, key: str) -> str:
  if cell is None:
    return ""          # no run: blank
  value = cell.get(key)
  return "—" if value is None else f"{value:.3f}"  # run there, metric undefined


def render_markdown(result: dict) -> str:
  cols = result["columns"]
  header = [result["first_column"]] + [f"{c} {label}" for c in cols for _, label in METRICS]
  lines = [f"# {result['title']}", "",
           "R = Pearson r, RMSE in g/cm², AUC for osteoporosis (T-score ≤ -2.5); "
           "test split. Avg = mean of L1-L4 (only where all four are present). "
           "Blank: no finished run; —: metric undefined.", "",
           "| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
  for row in result["rows"]:
    cells = [_fmt(row["cells"].get(c), k) for c in cols for k, _ in METRICS]
    lines.append("| " + " | ".join([row["label"]] + cells) + " |")
  lines += ["", "## Runs", "",
            "| Run | Status | Wall time | Folder |", "|---|---|---|---|"]
  for r in result["runs"]:
    status = r["status"]
    if status == "reused":
      status = f"reused ({os.path.relpath(r['reused_from'], result['root'])})"
    elif status == "failed":
      status = f"failed (log: {r['log']})"
    lines.append(f"| {r['row']}_{r['target']} | {status} | {format_seconds(r['wall_s'])} "
                 f"| {os.path.relpath(r['workdir'], result['root'])} |")
  if not result["runs"]:
    lines.append("| (none yet) | | | |")
  lines += ["", f"Total wall time: {format_seconds(result['total_wall_s']) or 'n/a'} "
            f"(train + evaluate of the runs timed here; reused runs not counted).", ""]
  return "\n".join(lines)
