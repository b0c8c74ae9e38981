"""Multi-process start-up: one call at the top of every entry point's main().

  from bmdjax import distributed
  distributed.initialize()        # before any other JAX call

What it does, in order:
1. explicit settings win: the arguments (the commands pass their
   `--coordinator_address/--num_processes/--process_id`, bmdjax/cli.py), else the
   environment variables
   `BMDJAX_COORDINATOR` (host:port of process 0), `BMDJAX_NUM_PROCESSES`,
   `BMDJAX_PROCESS_ID` (and optionally `BMDJAX_LOCAL_DEVICE_IDS`, e.g. "0,1");
2. else, under SLURM (srun) or Open MPI (mpirun) with more than one task,
   `jax.distributed.initialize()` without arguments: JAX reads the coordinator,
   the process count and id from the cluster's variables itself, and on GPUs
   gives each process the GPU of its local rank;
3. else nothing: a single process sees all its local devices.

On CPU the cross-process collectives are gloo (JAX's default), so the same
code runs as several processes on one machine (`launch/local.sh`).
"""

from __future__ import annotations

import os

from absl import logging
import jax
import numpy as np

_ENV = {"coordinator_address": "BMDJAX_COORDINATOR",
        "num_processes": "BMDJAX_NUM_PROCESSES",
        "process_id": "BMDJAX_PROCESS_ID",
        "local_device_ids": "BMDJAX_LOCAL_DEVICE_IDS"}


def _cluster_tasks() -> int | None:
  """Task count of a SLURM step or an Open MPI job (the environments JAX's own
  cluster detection handles), or None outside both."""
  if all(v in os.environ for v in ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS",
                                   "SLURM_PROCID", "SLURM_LOCALID")):
    return int(os.environ["SLURM_NTASKS"])
  if "OMPI_MCA_orte_hnp_uri" in os.environ:
    return int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1"))
  return None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None,
               local_device_ids: list[int] | None = None) -> bool:
  """Joins the other processes of this run; True if JAX is now multi-process
  (or was already initialised), False for a single process."""
  if jax.distributed.is_initialized():
    return True
  env = lambda name: os.environ.get(_ENV[name]) or None
  address = coordinator_address or env("coordinator_address")
  count = num_processes or env("num_processes")
  index = process_id if process_id is not None else env("process_id")
  if local_device_ids is None and env("local_device_ids"):
    local_device_ids = [int(i) for i in env("local_device_ids").split(",")]
  if address or count or index is not None:
    if address is None or count is None or index is None:
      raise ValueError(
          "multi-process run: give all three of --coordinator_address, --num_processes "
          "and --process_id (or BMDJAX_COORDINATOR, BMDJAX_NUM_PROCESSES, "
          f"BMDJAX_PROCESS_ID); got {address!r}, {count!r}, {index!r}")
    count, index = int(count), int(index)
    if count == 1:
      return False
    logging.info("jax.distributed: process %d of %d, coordinator %s", index, count, address)
    jax.distributed.initialize(address, count, index, local_device_ids=local_device_ids)
    return True
  tasks = _cluster_tasks()
  if tasks is not None and tasks > 1:
    logging.info("jax.distributed: %d tasks, detected from SLURM/Open MPI", tasks)
    jax.distributed.initialize(local_device_ids=local_device_ids)
    return True
  return False


def data_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D `data` mesh over `devices` (default: every device of every process),
  ordered by process, so that process p's devices hold rows [p*b, (p+1)*b) of
  each global batch, the rows `input_pipeline.train_dataset` gives it."""
  devices = sorted(devices or jax.devices(), key=lambda d: (d.process_index, d.id))
  return jax.sharding.Mesh(np.array(devices), ("data",),
                           axis_types=(jax.sharding.AxisType.Auto,))
