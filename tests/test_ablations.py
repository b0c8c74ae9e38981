"""launch.ablations: commands, resume, table assembly (no real training)."""

import json
import os
import subprocess
import sys

import pytest

from launch import ablation_tables

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _prep(tmp_path, grids=(2, 3, 4)):
  data = tmp_path / "data"
  data.mkdir(exist_ok=True)
  (data / "prep.json").write_text(json.dumps({"grids": list(grids)}))
  return str(data)


def _print(*args):
  out = subprocess.run([sys.executable, "-m", "launch.ablations", "--print", *args],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
  return out.returncode, out.stdout.splitlines(), out.stderr


def _metrics(vertebrae, base=0.8):
  """A metrics.json body: r = base + i/100, rmse = 0.07 + i/100, auc = 0.9 + i/100."""
  out = {"meta": {"vertebrae": list(vertebrae)}}
  for v in vertebrae:
    i = int(v[1])
    out[v] = {"n": 10, "r": base + i / 100, "rmse": 0.07 + i / 100, "auc": 0.9 + i / 100}
  return out


def _write_report(workdir, vertebrae, **kw):
  os.makedirs(os.path.join(workdir, "report"), exist_ok=True)
  with open(os.path.join(workdir, "report", "metrics.json"), "w") as f:
    json.dump(_metrics(vertebrae, **kw), f)


class FakeRunner:
  """Records commands; evaluate writes a report for the run's target."""

  def __init__(self, fail=()):
    self.calls, self.fail = [], set(fail)

  def __call__(self, cmd, log, cwd):
    workdir = next(a.split("=", 1)[1] for a in cmd if a.startswith("--workdir="))
    stage = cmd[2].split(".")[1]
    self.calls.append((stage, os.path.basename(workdir)))
    assert log == os.path.join(workdir, "ablation.log") and cwd == REPO
    if (stage, os.path.basename(workdir)) in self.fail:
      return 3
    if stage == "train":  # as bmdjax.train does: evaluate and predict read it
      with open(os.path.join(workdir, "run.json"), "w") as f:
        json.dump({"config": {}, "target_stats": {}}, f)
    if stage == "evaluate":
      assert "target_stats" in json.load(open(os.path.join(workdir, "run.json")))
      target = workdir.rsplit("_", 1)[1]
      _write_report(workdir, ablation_tables.VERTEBRAE if target == "all" else [target])
    return 0


# ----------------------------------------------------------------- commands


def test_print_table1_commands(tmp_path):
  data = _prep(tmp_path)
  rc, lines, _ = _print("--table=1", f"--data={data}", "--workdir=ROOT",
                        "--config_arg=demo", "--set=optim.lr=1e-3", "--set=num_epochs=2")
  assert rc == 0 and len(lines) == 5 * 4
  models = ["baseline", "mulpat", "attmulpat", "mulroi", "attmulroi"]
  for i, line in enumerate(lines):
    model, target = models[i // 4], f"L{i % 4 + 1}"
    grid = "grid=3," if "pat" in model else ""
    train, evaluate = line.split(" && ")
    common = (f"--config=configs/{model}.py:demo,{grid}target={target} "
              f"--workdir=ROOT/table1/{model}_{target} --config.data.dir={data} "
              "--config.optim.lr=1e-3 --config.num_epochs=2")
    assert train == f"python -m bmdjax.train {common}"
    assert evaluate == f"python -m bmdjax.evaluate {common} --split=test"


def test_print_table3_and_table4(tmp_path):
  data = _prep(tmp_path)
  rc, lines, _ = _print("--table=3", f"--data={data}", "--workdir=R", "--targets=L2")
  assert rc == 0
  backbones = ["vgg13", "vgg16", "vgg19", "resnet18", "resnet34", "resnet50"]
  assert len(lines) == len(backbones)
  for b, line in zip(backbones, lines):
    assert line.startswith(f"python -m bmdjax.train --config=configs/baseline.py:"
                           f"backbone={b},target=L2 --workdir=R/table3/{b}_L2 ")
  rc, lines, _ = _print("--table=3", f"--data={data}", "--workdir=R", "--targets=L2",
                        "--resnet101")
  assert len(lines) == 7 and "backbone=resnet101,target=L2" in lines[-1]

  rc, lines, _ = _print("--table=4", f"--data={data}", "--workdir=R", "--targets=all",
                        "--config_arg=demo")
  assert rc == 0 and len(lines) == 3
  for g, line in zip((2, 3, 4), lines):
    assert (f"--config=configs/mulpat.py:demo,grid={g},target=all "
            f"--workdir=R/table4/grid{g}_all ") in line


def test_print_leaves_out_finished_runs(tmp_path):
  data = _prep(tmp_path)
  root = tmp_path / "root"
  _write_report(str(root / "table4" / "grid2_L1"), ["L1"])
  rc, lines, err = _print("--table=4", f"--data={data}", f"--workdir={root}",
                          "--targets=L1")
  assert rc == 0 and len(lines) == 2 and "grid2_L1" not in " ".join(lines)
  assert "1 run(s) with a report left out" in err


def test_missing_grids_is_a_clear_error(tmp_path):
  data = _prep(tmp_path, grids=(3,))
  rc, lines, err = _print("--table=4", f"--data={data}", "--workdir=R")
  assert rc == 2 and not lines
  assert "--grids=2,3,4" in err and "patches_2/4" in err and "grid2_L1" in err
  # Table 1 needs grid 3 only; Table 3 reads no patches at all.
  runs = ablation_tables.plan(1, "R")
  ablation_tables.check_grids(data, runs)
  with pytest.raises(ablation_tables.MissingGridsError, match="--grids=2"):
    ablation_tables.check_grids(_prep(tmp_path, grids=(2,)), runs, table=1)
  ablation_tables.check_grids(_prep(tmp_path, grids=()), ablation_tables.plan(3, "R"))
  # --set data.grid=4 moves every patch model to 4x4.
  with pytest.raises(ablation_tables.MissingGridsError, match="4x4"):
    ablation_tables.check_grids(_prep(tmp_path, grids=(3,)), runs, sets=["data.grid=4"])
  # run_table checks before running anything.
  runner = FakeRunner()
  with pytest.raises(ablation_tables.MissingGridsError):
    ablation_tables.run_table(4, data, str(tmp_path / "root"), runner=runner)
  assert runner.calls == []


def test_bad_arguments():
  with pytest.raises(ValueError):
    ablation_tables.parse_targets("L5")
  with pytest.raises(ValueError):
    ablation_tables.config_overrides(["optim.lr"])
  with pytest.raises(ValueError):
    ablation_tables.plan(2, "R")
  assert ablation_tables.config_overrides(["config.optim.lr=1e-3"]) == ["--config.optim.lr=1e-3"]


# ----------------------------------------------------------------- running


def test_run_table_resumes_and_reports_failures(tmp_path):
  data, root = _prep(tmp_path), str(tmp_path / "root")
  t4 = os.path.join(root, "table4")
  _write_report(os.path.join(t4, "grid2_L1"), ["L1"])               # finished: skipped
  os.makedirs(os.path.join(t4, "grid3_L1", "checkpoints", "40"))    # interrupted: resumed
  runner = FakeRunner(fail={("train", "grid4_L1")})
  out = ablation_tables.run_table(4, data, root, targets="L1,L2", runner=runner)
  assert runner.calls == [
      ("train", "grid2_L2"), ("evaluate", "grid2_L2"),
      ("train", "grid3_L1"), ("evaluate", "grid3_L1"),
      ("train", "grid3_L2"), ("evaluate", "grid3_L2"),
      ("train", "grid4_L1"),                         # failed: no evaluate, others go on
      ("train", "grid4_L2"), ("evaluate", "grid4_L2")]
  status = {r["name"]: r["status"] for r in out["runs"]}
  assert status == {"grid2_L1": "skipped", "grid2_L2": "done", "grid3_L1": "done",
                    "grid3_L2": "done", "grid4_L1": "failed", "grid4_L2": "done"}
  [failure] = out["failures"]
  assert failure["failed"] == "train" and failure["rc"] == 3
  assert failure["log"] == os.path.join(t4, "grid4_L1", "ablation.log")
  info = json.load(open(os.path.join(t4, "grid3_L1", "ablation.json")))
  # bmdjax.train's own run.json (evaluate and predict need it) is left alone.
  assert "target_stats" in json.load(open(os.path.join(t4, "grid3_L1", "run.json")))
  assert info["status"] == "done" and info["attempts"][0]["resumed"]
  assert info["wall_s"] >= 0 and "train_s" in info["attempts"][0]
  assert os.path.exists(os.path.join(t4, "table.md"))

  # Second pass: only the failed run is tried again, and it gets a second attempt.
  runner = FakeRunner()
  out = ablation_tables.run_table(4, data, root, targets="L1,L2", runner=runner)
  assert runner.calls == [("train", "grid4_L1"), ("evaluate", "grid4_L1")]
  assert not out["failures"]
  info = json.load(open(os.path.join(t4, "grid4_L1", "ablation.json")))
  assert [a.get("failed") for a in info["attempts"]] == ["train", None]


def test_evaluate_without_report_is_a_failure(tmp_path):
  data, root = _prep(tmp_path), str(tmp_path / "root")
  out = ablation_tables.run_table(3, data, root, targets="L1", runner=lambda c, l, w: 0)
  assert len(out["failures"]) == 6
  assert all(f["failed"] == "evaluate" for f in out["failures"])


def test_identical_run_of_another_table_is_reused(tmp_path):
  data, root = _prep(tmp_path), str(tmp_path / "root")
  ablation_tables.run_table(1, data, root, targets="L1", runner=FakeRunner())
  runner = FakeRunner()
  out = ablation_tables.run_table(4, data, root, targets="L1", runner=runner)
  assert ("train", "grid3_L1") not in runner.calls    # = Table I MulPat
  assert ("train", "grid2_L1") in runner.calls
  assert out["table"]["rows"][1]["cells"]["L1"]["r"] == pytest.approx(0.81)
  cmd = lambda t, i: ablation_tables.train_command(ablation_tables.plan(t, root, ["L1"])[i], data)
  assert ablation_tables._identity(cmd(3, 1)) == ablation_tables._identity(cmd(1, 0))  # VGG16
  assert ablation_tables._identity(cmd(3, 0)) != ablation_tables._identity(cmd(1, 0))
  out = ablation_tables.run_table(3, data, root, targets="L1", runner=FakeRunner(), reuse=False)
  assert [r["status"] for r in out["runs"]].count("reused") == 0
  runner = FakeRunner()
  ablation_tables.run_table(3, data, str(tmp_path / "root2"), targets="L1", runner=runner)
  assert len(runner.calls) == 12


# ----------------------------------------------------------------- tables


def test_table_assembly(tmp_path):
  root = str(tmp_path / "root")
  t1 = os.path.join(root, "table1")
  for v in ablation_tables.VERTEBRAE:                       # Baseline: four per-vertebra runs
    _write_report(os.path.join(t1, f"baseline_{v}"), [v], base=0.80)
  _write_report(os.path.join(t1, "mulpat_L1"), ["L1"], base=0.70)   # MulPat: L1 only
  _write_report(os.path.join(t1, "mulroi_all"), ablation_tables.VERTEBRAE, base=0.60)
  _write_report(os.path.join(t1, "mulroi_L2"), ["L2"], base=0.50)   # wins over _all
  os.makedirs(os.path.join(t1, "attmulroi_L1"))
  with open(os.path.join(t1, "attmulroi_L1", "ablation.json"), "w") as f:
    json.dump({"status": "failed", "wall_s": 12.5, "attempts": [{}]}, f)
  with open(os.path.join(t1, "baseline_L1", "ablation.json"), "w") as f:
    json.dump({"status": "done", "wall_s": 100.0, "attempts": [{}]}, f)
  metrics = json.load(open(os.path.join(t1, "baseline_L3", "report", "metrics.json")))
  metrics["L3"]["auc"] = None                        # undefined (no osteoporosis case)
  json.dump(metrics, open(os.path.join(t1, "baseline_L3", "report", "metrics.json"), "w"))

  result = ablation_tables.collect(1, root)
  rows = {r["name"]: r["cells"] for r in result["rows"]}
  assert [r["name"] for r in result["rows"]] == [
      "baseline", "mulpat", "attmulpat", "mulroi", "attmulroi"]
  b = rows["baseline"]
  assert b["Avg"]["r"] == pytest.approx(0.825)       # mean of 0.81..0.84
  assert b["Avg"]["rmse"] == pytest.approx(0.095)
  assert b["Avg"]["auc"] is None and b["L3"]["auc"] is None
  assert set(rows["mulpat"]) == {"L1"}              # no Avg with a vertebra missing
  assert rows["mulroi"]["L2"]["r"] == pytest.approx(0.52)
  assert rows["mulroi"]["L1"]["r"] == pytest.approx(0.61)
  assert rows["mulroi"]["Avg"]["r"] == pytest.approx((0.61 + 0.52 + 0.63 + 0.64) / 4)
  assert rows["attmulpat"] == {} and rows["attmulroi"] == {}
  assert result["total_wall_s"] == pytest.approx(112.5)

  on_disk = json.load(open(os.path.join(t1, "table.json")))
  assert on_disk["rows"][0]["cells"]["Avg"]["r"] == pytest.approx(0.825)
  md = open(os.path.join(t1, "table.md")).read()
  lines = md.splitlines()
  header = next(l for l in lines if l.startswith("| Model"))
  assert header.split(" | ")[1:4] == ["L1 R", "L1 RMSE", "L1 AUC"]
  assert header.rstrip(" |").endswith("Avg R | Avg RMSE | Avg AUC")
  cells = lambda label: [c.strip() for c in
                         next(l for l in lines if l.startswith(f"| {label} |")).split("|")[2:-1]]
  assert cells("Baseline") == ["0.810", "0.080", "0.910", "0.820", "0.090", "0.920",
                               "0.830", "0.100", "—", "0.840", "0.110", "0.940",
                               "0.825", "0.095", "—"]
  assert cells("MulPat") == ["0.710", "0.080", "0.910"] + [""] * 12
  assert cells("AttMulPat") == [""] * 15
  assert "failed (log:" in md and "1m52s" in md    # total 112.5 s


def test_table4_reference_row_and_collect_only_cli(tmp_path):
  root = tmp_path / "root"
  for v in ablation_tables.VERTEBRAE:
    _write_report(str(root / "table1" / f"attmulroi_{v}"), [v], base=0.85)
  _write_report(str(root / "table4" / "grid3_all"), ablation_tables.VERTEBRAE, base=0.75)
  out = subprocess.run([sys.executable, "-m", "launch.ablations", "--table=4",
                        f"--workdir={root}", "--collect_only"], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
  assert out.returncode == 0, out.stderr
  assert "| 3 x 3 | 0.760 |" in out.stdout
  assert "| Ours (AttMulRoi, from Table I) | 0.860 |" in out.stdout
  table = json.loads((root / "table4" / "table.json").read_text())
  assert [r["label"] for r in table["rows"]][-1].startswith("Ours")
  assert table["rows"][-1]["cells"]["Avg"]["r"] == pytest.approx(0.875)
