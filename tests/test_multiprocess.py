"""Two processes on localhost (jax.distributed, gloo) train like one process
with the same devices, evaluate into one report, and hand their checkpoint to
a single process.

The reference is this pytest process: one process with 4 CPU devices. The
two workers have 2 CPU devices each. The input pipeline defines the data order
on the whole split and gives process p rows [p*b, (p+1)*b) of each global
batch (input_pipeline.train_dataset), so both runs see the same global batches
and the same augmentation; they differ only in float summation order.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pandas as pd
import pytest

from bmdjax import distributed, evaluation, inference, training
from bmdjax import runs
from tests.test_scaling import compilation_cache, flat, num_steps, scaling_config  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_PROCESSES = 2
# Each device computes the same one-record slice in both runs; only the
# all-reduce differs (in-process vs gloo). Measured: losses within 1e-7 and
# parameters within 3e-8 after 9 steps; one SGD step moves them by ~2e-2.
LOSS_RTOL = 1e-5
PARAM_ATOL = 1e-5


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def worker(data_dir, workdir, port, process_id):
  """One of the processes: train num_steps, then evaluate the test split."""
  from absl import flags
  flags.FLAGS.mark_as_parsed()
  assert distributed.initialize(f"127.0.0.1:{port}", NUM_PROCESSES, process_id)
  assert jax.process_count() == NUM_PROCESSES and jax.device_count() == 4
  config = scaling_config(data_dir)
  out = training.train_and_evaluate(config, workdir, stop_after_steps=num_steps(config))
  evaluation.evaluate(config, workdir, split="test", checkpoint="latest", bootstrap=10)
  with open(os.path.join(workdir, f"history_{process_id}.json"), "w") as f:
    json.dump(out["history"], f)


@pytest.fixture(scope="module")
def two_process_run(prepared_dir, tmp_path_factory):
  """The 2-process run (in subprocesses) and the 1-process reference (here)."""
  workdir = tmp_path_factory.mktemp("two_processes")
  port = free_port()
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT,
         "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  if jax.config.jax_compilation_cache_dir:  # the workers' evaluate reuses their validation's
    env["JAX_COMPILATION_CACHE_DIR"] = jax.config.jax_compilation_cache_dir
  logs = [workdir / f"process_{i}.log" for i in range(NUM_PROCESSES)]
  procs = [subprocess.Popen(
      [sys.executable, "-m", "tests.test_multiprocess", str(prepared_dir), str(workdir),
       str(port), str(i)], cwd=ROOT, env=env, stdout=open(logs[i], "w"),
      stderr=subprocess.STDOUT) for i in range(NUM_PROCESSES)]
  config = scaling_config(prepared_dir)
  ref_dir = tmp_path_factory.mktemp("one_process")
  reference = training.train_and_evaluate(config, str(ref_dir), stop_after_steps=num_steps(config))
  ref_metrics = evaluation.evaluate(config, str(ref_dir), split="test", checkpoint="latest",
                                    bootstrap=10)
  try:
    for p in procs:
      p.wait(timeout=600)
  finally:
    for p in procs:
      p.kill()
  for i, p in enumerate(procs):
    assert p.returncode == 0, f"process {i} failed:\n{logs[i].read_text()[-5000:]}"
  return config, workdir, ref_dir, reference, ref_metrics


def test_two_processes_train_like_one(two_process_run):
  config, workdir, ref_dir, reference, _ = two_process_run
  histories = [json.loads((workdir / f"history_{i}.json").read_text())
               for i in range(NUM_PROCESSES)]
  for h in histories[0] + histories[1] + reference["history"]:
    h.pop("seconds_per_step")
  assert histories[0] == histories[1]  # every process logs the same replicated metrics
  losses = np.array([h["loss"] for h in histories[0]])
  ref_losses = np.array([h["loss"] for h in reference["history"]])
  assert len(losses) == num_steps(config)
  np.testing.assert_allclose(losses, ref_losses, rtol=LOSS_RTOL)
  graphdef, params, rest = inference.init_model_state(config)
  params, _, step = runs.restore_params(str(workdir), params, rest, "latest")
  assert step == num_steps(config)
  np.testing.assert_allclose(flat(params), flat(reference["state"]["params"]),
                             rtol=0, atol=PARAM_ATOL)
  # Validation ran on the gathered predictions of both processes.
  best = json.loads((workdir / "best.json").read_text())
  ref_best = json.loads((ref_dir / "best.json").read_text())
  assert best["step"] == ref_best["step"]
  np.testing.assert_allclose(best["rmse"], ref_best["rmse"], rtol=1e-4)


def test_two_processes_write_one_complete_report(two_process_run):
  config, workdir, ref_dir, _, ref_metrics = two_process_run
  predictions = pd.read_csv(workdir / "report" / "predictions.csv")
  manifest = pd.read_csv(os.path.join(config.data.dir, "manifest.csv"))
  test = manifest[(manifest.split == "test") & (manifest.status == "ok")]
  assert len(predictions) == len(test)
  assert not predictions["image"].duplicated().any()
  assert set(predictions["image"]) == set(test["image"])
  reference = pd.read_csv(ref_dir / "report" / "predictions.csv")
  # Predictions agree to float32 reduction order; so do the T-scores derived from
  # them (T = (BMD - mean) / sd, sd ~0.12: a 1e-6 BMD difference can move the
  # fifth decimal the CSV keeps).
  numeric = ["pred_L1", "pred_t_L1"]
  pd.testing.assert_frame_equal(predictions.drop(columns=numeric),
                                reference.drop(columns=numeric))
  np.testing.assert_allclose(predictions["pred_L1"], reference["pred_L1"], atol=1e-4)
  np.testing.assert_allclose(predictions["pred_t_L1"], reference["pred_t_L1"], atol=1e-3)
  metrics = json.loads((workdir / "report" / "metrics.json").read_text())
  np.testing.assert_allclose(metrics["L1"]["rmse"], ref_metrics["L1"]["rmse"], atol=1e-4)


def test_checkpoint_of_two_processes_resumes_in_one(two_process_run, tmp_path):
  """Saved by 2 processes, resumed by 1: the data order continues where the
  step says, so the result matches the 1-process run resumed at the same step."""
  import shutil
  config, workdir, ref_dir, _, _ = two_process_run
  end = num_steps(config) + 3
  shutil.copytree(workdir, tmp_path / "mp", ignore=shutil.ignore_patterns("report", "tb"))
  shutil.copytree(ref_dir, tmp_path / "ref", ignore=shutil.ignore_patterns("report", "tb"))
  # No iterator state is stored: the step places the data order in any topology.
  from_mp = training.train_and_evaluate(config, str(tmp_path / "mp"), stop_after_steps=end)
  from_ref = training.train_and_evaluate(config, str(tmp_path / "ref"), stop_after_steps=end)
  assert from_mp["step"] == from_ref["step"] == end
  np.testing.assert_allclose([h["loss"] for h in from_mp["history"]],
                             [h["loss"] for h in from_ref["history"]], rtol=LOSS_RTOL)
  np.testing.assert_allclose(flat(from_mp["state"]["params"]),
                             flat(from_ref["state"]["params"]), rtol=0, atol=PARAM_ATOL)


def test_initialize_reads_arguments_environment_and_cluster(monkeypatch):
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: calls.append((a, k)))
  for name in ("BMDJAX_COORDINATOR", "BMDJAX_NUM_PROCESSES", "BMDJAX_PROCESS_ID",
               "BMDJAX_LOCAL_DEVICE_IDS", "SLURM_JOB_ID", "SLURM_STEP_NODELIST",
               "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID", "OMPI_MCA_orte_hnp_uri"):
    monkeypatch.delenv(name, raising=False)
  assert not distributed.initialize() and not calls  # one process: nothing to do
  monkeypatch.setenv("BMDJAX_COORDINATOR", "10.0.0.1:1234")
  with pytest.raises(ValueError, match="all three"):
    distributed.initialize()
  monkeypatch.setenv("BMDJAX_NUM_PROCESSES", "4")
  monkeypatch.setenv("BMDJAX_PROCESS_ID", "2")
  assert distributed.initialize()
  assert calls[-1] == (("10.0.0.1:1234", 4, 2), {"local_device_ids": None})
  assert distributed.initialize("h:1", 2, 0)  # arguments win over the environment
  assert calls[-1] == (("h:1", 2, 0), {"local_device_ids": None})
  for name in ("BMDJAX_COORDINATOR", "BMDJAX_NUM_PROCESSES", "BMDJAX_PROCESS_ID"):
    monkeypatch.delenv(name)
  slurm = dict(SLURM_JOB_ID="7", SLURM_STEP_NODELIST="gpu[01-02]", SLURM_NTASKS="1",
               SLURM_PROCID="0", SLURM_LOCALID="0")
  for k, v in slurm.items():
    monkeypatch.setenv(k, v)
  n = len(calls)
  assert not distributed.initialize() and len(calls) == n  # a single SLURM task
  monkeypatch.setenv("SLURM_NTASKS", "16")
  assert distributed.initialize()  # JAX reads SLURM's variables itself
  assert calls[-1] == ((), {"local_device_ids": None})


if __name__ == "__main__":
  worker(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
