"""bmdjax.benchmark runs every part standalone and reports sane figures.

No speed is asserted: the targets live in BENCHMARKS.md, not in timed tests.
"""

import json
import os
import shlex
import subprocess
import sys

import ml_collections

from bmdjax import config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config=configs/attmulroi.py:width=0.0625", "--size=32",
        "--config.model.transformer.depth=1", "--config.model.transformer.dim=32",
        "--config.model.transformer.heads=2", "--config.model.transformer.head_dim=16",
        "--config.model.transformer.mlp_dim=32", "--config.model.regressor_hidden=16",
        "--config.batch_size=4", "--config.input.read_threads=1"]
TINY_OVERRIDES = {"model.transformer.depth": 1, "model.transformer.dim": 32,
                  "model.transformer.heads": 2, "model.transformer.head_dim": 16,
                  "model.transformer.mlp_dim": 32, "model.regressor_hidden": 16,
                  "batch_size": 4, "input.read_threads": 1}


def _run(*args, console=False):
  """`python -m bmdjax.benchmark ARGS`, or with `console` the `bmdjax
  benchmark ARGS` of the console command (bmdjax.commands.main)."""
  env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
  start = ([sys.executable, "-c", "import sys; from bmdjax import commands; "
            "commands.main(['bmdjax', *sys.argv[1:]])", "benchmark"] if console else
           [sys.executable, "-m", "bmdjax.benchmark"])
  return subprocess.run(start + list(args), cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300)


def _check_config_record(record, spec, overrides):
  """The recorded config says how to make it again: its file and arguments,
  with the overrides applied, give every recorded value."""
  assert record["file"] == config_lib.resolve(spec)
  assert record["overrides"] == overrides
  config = config_lib.load(record["file"])
  config.update_from_flattened_dict(record["overrides"])
  config = config_lib.finalize(ml_collections.ConfigDict(config.to_dict()))
  assert json.loads(json.dumps(config.to_dict())) == json.loads(json.dumps(record["values"]))


def test_help_lists_the_parts():
  out = _run("--help")  # absl exits with status 1 after printing the help
  assert "Traceback" not in out.stderr, out.stderr
  for flag in ("--what", "--steps", "--warmup", "--data", "--json", "--markdown"):
    assert flag in out.stdout


def test_every_part_standalone(tmp_path):
  path = tmp_path / "bench.json"
  args = [*TINY, "--what=train,input,prep,predict,precision", "--steps=2", "--warmup=1",
          "--input_batches=3", "--prep_studies=10", "--prep_workers=1",
          "--spacing_mm=1.2,1.4", "--predict_studies=2", "--matmul_size=256",
          f"--json={path}", "--markdown"]
  out = _run(*args)
  assert out.returncode == 0, out.stderr[-3000:]
  r = json.loads(path.read_text())
  assert r["command"] == shlex.join(["python", "-m", "bmdjax.benchmark", *args])
  _check_config_record(r["config"], "configs/attmulroi.py:width=0.0625", TINY_OVERRIDES)
  for key in ("platform", "device_kind", "device_count", "cpu_model", "cpu_cores"):
    assert r["hardware"][key]
  for key in ("python", "jax", "jaxlib", "flax"):
    assert r["versions"][key]

  t = r["train"]
  assert t["samples_per_second"] > 0 and t["step_time_ms"] > 0
  assert t["flops_per_sample"] > 0 and t["flops_per_step"] >= t["flops_per_sample"]
  assert t["compile_s"] > 0 and 0 < t["mfu"] <= 1
  assert t["peak_memory_bytes"] is None and t["peak_memory_note"]  # CPU
  assert t["state_dtypes"] == ["float32"] and t["loss_finite"]
  assert t["fed_samples_per_second"] > 0
  assert r["peak"]["measured_flops"]["float32"] > 0 and r["peak"]["nominal_tflops"] is None

  i = r["input"]
  assert i["samples_per_second"] > 0 and i["to_device_samples_per_second"] > 0
  assert i["times_training_rate"] > 0
  p = r["prep"]
  assert p["studies"] == 10 and p["studies_per_second"] > 0
  s = r["predict"]
  assert s["refused"] == 0 and s["detect_ms"] is None and s["detect_note"]
  for key in ("read_dicom_ms", "crops_ms", "model_ms", "latency_ms"):
    assert s[key] > 0
  assert s["latency_ms"] >= s["model_ms"]
  q = r["precision"]
  assert q["records"] > 0 and 0 <= q["max_abs_diff_g_cm2"] < 0.01
  assert q["mean_abs_diff_g_cm2"] <= q["max_abs_diff_g_cm2"]
  assert "| train step |" in out.stdout and "| bf16 vs f32 predictions |" in out.stdout


def test_console_command_records_the_command_as_typed(tmp_path):
  # Under `bmdjax benchmark` sys.argv is the console entry's: the record must
  # still be the command the user typed, runnable again as it stands.
  path = tmp_path / "bench.json"
  args = [*TINY, "--what=train", "--steps=1", "--warmup=0", "--matmul_size=64",
          f"--json={path}"]
  out = _run(*args, console=True)
  assert out.returncode == 0, out.stderr[-3000:]
  r = json.loads(path.read_text())
  assert r["command"] == shlex.join(["bmdjax", "benchmark", *args])
  _check_config_record(r["config"], "configs/attmulroi.py:width=0.0625", TINY_OVERRIDES)
  assert r["config"]["values"]["model"]["width"] == 0.0625
  assert r["model"]["num_inputs"] == r["config"]["values"]["model"]["num_inputs"]
  assert r["train"]["steps"] == 1
