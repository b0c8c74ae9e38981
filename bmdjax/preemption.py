"""Stopping a training job cleanly when the cluster asks it to.

Schedulers preempt with SIGTERM and a grace period (SLURM: `--signal=TERM@120`,
Kubernetes: `terminationGracePeriodSeconds`); a person stops with Ctrl-C. Either
way the loop should finish the step it is on, write a checkpoint and exit, so
that rerunning the same command resumes exactly. On several hosts the signal may
reach only some processes, and a checkpoint save is collective: the processes
therefore agree on the stop at the same step (an all-gather of one flag, done
only on steps where the loop synchronises with the host anyway).
"""

from __future__ import annotations

import signal
import threading

from absl import logging
import jax
import numpy as np

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
  """Context manager: SIGTERM/SIGINT set a flag instead of killing the job.

  A second Ctrl-C while the checkpoint is being written falls back to the
  default handler (KeyboardInterrupt), for a person who really wants out.
  """

  def __init__(self):
    self._requested = None  # the signal name once one arrived
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    else:  # signal handlers can only be installed from the main thread
      logging.warning("not in the main thread: SIGTERM will not checkpoint before exiting")
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous.clear()
    return False

  def _handle(self, signum, frame):
    del frame
    name = signal.Signals(signum).name
    if self._requested and signum == signal.SIGINT:
      signal.default_int_handler(signum, None)
    self._requested = name
    logging.warning("%s received: finishing this step, saving a checkpoint, then exiting", name)

  def request(self, reason: str = "requested"):
    """Asks for a stop as a signal would (for tests and callers)."""
    self._requested = reason

  @property
  def local(self) -> str | None:
    return self._requested

  def should_stop(self, sync_point: bool) -> bool:
    """Whether every process should stop after this step.

    One process: the local flag, every step. Several: only at `sync_point`
    steps, where all processes all-gather their flags and so decide alike.
    """
    if jax.process_count() == 1:
      return self._requested is not None
    if not sync_point:
      return False
    from jax.experimental import multihost_utils
    flags = multihost_utils.process_allgather(np.array(self._requested is not None))
    return bool(np.any(flags))


def signal_number(name: str) -> int:
  """SIGTERM's number for "SIGTERM"; SIGTERM's for a stop another process saw."""
  try:
    return int(signal.Signals[name])
  except KeyError:
    return int(signal.SIGTERM)
