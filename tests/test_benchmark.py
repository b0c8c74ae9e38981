"""bmdjax.benchmark runs every part standalone and reports sane figures.

No speed is asserted: the targets live in BENCHMARKS.md, not in timed tests.
"""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config=configs/attmulroi.py:width=0.0625", "--size=32",
        "--config.model.transformer.depth=1", "--config.model.transformer.dim=32",
        "--config.model.transformer.heads=2", "--config.model.transformer.head_dim=16",
        "--config.model.transformer.mlp_dim=32", "--config.model.regressor_hidden=16",
        "--config.batch_size=4", "--config.input.read_threads=1"]


def _run(*args):
  env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
  return subprocess.run([sys.executable, "-m", "bmdjax.benchmark", *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=300)


def test_help_lists_the_parts():
  out = _run("--help")  # absl exits with status 1 after printing the help
  assert "Traceback" not in out.stderr, out.stderr
  for flag in ("--what", "--steps", "--warmup", "--data", "--json", "--markdown"):
    assert flag in out.stdout


def test_every_part_standalone(tmp_path):
  path = tmp_path / "bench.json"
  out = _run(*TINY, "--what=train,input,prep,predict,precision", "--steps=2", "--warmup=1",
             "--input_batches=3", "--prep_studies=10", "--prep_workers=1",
             "--spacing_mm=1.2,1.4", "--predict_studies=2", "--matmul_size=256",
             f"--json={path}", "--markdown")
  assert out.returncode == 0, out.stderr[-3000:]
  r = json.loads(path.read_text())
  assert r["command"].startswith("python -m bmdjax.benchmark")
  assert r["config"] == "configs/attmulroi.py:width=0.0625"
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
