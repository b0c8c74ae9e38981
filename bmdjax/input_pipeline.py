"""grain input pipeline over the prepared ArrayRecord shards.

Each process reads its own slice of the records (`process_index::process_count`),
so no record is read twice per epoch; batches go to the devices as global
`jax.Array`s sharded over the mesh's `data` axis. Crops stay uint16 until they
are on the device (half the host->device traffic of float32).
"""

from __future__ import annotations

import collections
import json
import os
import threading

import grain
import jax
import numpy as np
import tensorflow_datasets as tfds

from configs.common import VERTEBRAE


def dataset_dir(data_dir: str) -> str:
  """The TFDS folder inside a data_prep.build output (or the folder itself)."""
  from data_prep import build  # light import; avoids a cycle at module load
  for candidate in (build.dataset_dir(data_dir), data_dir):
    if os.path.isfile(os.path.join(candidate, "dataset_info.json")):
      return candidate
  raise FileNotFoundError(
      f"no prepared dataset in {data_dir!r}: run `python -m data_prep.build "
      f"--out={data_dir} ...` first, or set --config.data.dir")


def open_split(data_dir: str, split: str):
  """Random-access source of one split."""
  builder = tfds.builder_from_directory(dataset_dir(data_dir))
  if split not in builder.info.splits:
    raise ValueError(f"split {split!r} not in {data_dir} (has: {list(builder.info.splits)})")
  return builder.as_data_source(split)


def load_prep_summary(data_dir: str) -> dict:
  with open(os.path.join(data_dir, "prep.json")) as f:
    return json.load(f)


def target_indices(target: str) -> list[int]:
  return list(range(4)) if target == "all" else [VERTEBRAE.index(target)]


def input_key(data_config) -> str:
  return {"rois": "rois", "whole": "whole",
          "patches": f"patches_{data_config.grid}"}[data_config.inputs]


def make_example_fn(config):
  """Record -> {'x': uint16 [K, S, S], 'y': float32 [T], 'mask': float32 [T], ...}."""
  key = input_key(config.data)
  idx = target_indices(config.target)

  def fn(record):
    if key == "rois":  # the 14 ROIs and the whole image, in rois.INPUT_NAMES order
      x = np.concatenate([record["rois"], record["whole"][None]], axis=0)
    elif key == "whole":
      x = record["whole"][None]
    else:
      x = record[key]
    bmd = np.asarray(record["bmd"], np.float32)[idx]
    mask = np.isfinite(bmd)
    return {"x": x, "y": np.where(mask, bmd, 0.0).astype(np.float32),
            "mask": mask.astype(np.float32), "sex": np.int32(record["sex"]),
            "age": np.float32(record["age"]),
            "bmd": np.asarray(record["bmd"], np.float32)}

  return fn


def _meta_fn(record):
  """Identifiers for reports (kept out of the device batch)."""
  as_str = lambda v: v.decode() if isinstance(v, bytes) else str(v)
  return {"patient_id": as_str(record["patient_id"]), "image": as_str(record["image"])}


def per_process_batch(global_batch: int) -> int:
  if global_batch % jax.process_count():
    raise ValueError(f"batch_size {global_batch} is not divisible by the "
                     f"{jax.process_count()} processes")
  local = global_batch // jax.process_count()
  if local % jax.local_device_count():
    raise ValueError(f"per-process batch {local} is not divisible by the "
                     f"{jax.local_device_count()} local devices")
  return local


TRAIN_KEYS = ("x", "y", "mask")


def train_dataset(config, source) -> grain.IterDataset:
  """Endless, reshuffled each epoch, this process's slice only."""
  ds = grain.MapDataset.source(source)
  ds = ds[jax.process_index()::jax.process_count()]
  ds = ds.shuffle(seed=config.input.shuffle_seed).repeat(None)
  example = make_example_fn(config)
  ds = ds.map(lambda r: {k: v for k, v in example(r).items() if k in TRAIN_KEYS})
  ds = ds.batch(per_process_batch(config.batch_size), drop_remainder=True)
  return ds.to_iter_dataset(grain.ReadOptions(
      num_threads=config.input.read_threads,
      prefetch_buffer_size=max(config.input.prefetch_batches, 1)))


def steps_per_epoch(config, num_records: int) -> int:
  """Whole global batches per pass over the data (the remainder is skipped)."""
  per_process = num_records // jax.process_count()
  return max(per_process // per_process_batch(config.batch_size), 1)


def eval_batches(config, source, batch_size: int | None = None):
  """One ordered pass over this process's slice, padded to whole batches.

  Yields (batch, meta, valid) where `valid` marks the real (non-padding) rows.
  """
  batch_size = batch_size or per_process_batch(config.batch_size)
  fn = make_example_fn(config)
  indices = list(range(jax.process_index(), len(source), jax.process_count()))
  ds = grain.MapDataset.source(source)[jax.process_index()::jax.process_count()]
  ds = ds.map(lambda r: (fn(r), _meta_fn(r)))
  it = iter(ds.to_iter_dataset(grain.ReadOptions(
      num_threads=config.input.read_threads, prefetch_buffer_size=2 * batch_size)))
  for start in range(0, len(indices), batch_size):
    items = [next(it) for _ in range(min(batch_size, len(indices) - start))]
    n = len(items)
    items += [items[-1]] * (batch_size - n)
    batch = {k: np.stack([ex[k] for ex, _ in items]) for k in items[0][0]}
    meta = [m for _, m in items[:n]]
    yield batch, meta, np.arange(batch_size) < n


def to_global(batch: dict, sharding) -> dict:
  """Process-local numpy batch -> global jax.Arrays sharded over the mesh."""
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


class DeviceIterator:
  """Keeps `depth` batches in flight to the devices, and checkpoints exactly.

  The grain iterator runs ahead of training by the prefetch depth; the state
  saved is the one after the last batch *consumed*, so a restore replays
  nothing and skips nothing. Implements the get_state/set_state protocol of
  grain's orbax CheckpointHandler.
  """

  def __init__(self, dataset: grain.IterDataset, sharding, depth: int = 2):
    self._dataset, self._sharding, self._depth = dataset, sharding, depth
    self._it = iter(dataset)
    self._consumed_state = self._it.get_state()
    self._queue: collections.deque = collections.deque()
    self._lock = threading.Lock()

  def _fetch(self):
    batch = next(self._it)
    return to_global(batch, self._sharding), self._it.get_state()

  def __iter__(self):
    return self

  def __next__(self):
    with self._lock:
      while len(self._queue) < self._depth:
        self._queue.append(self._fetch())
      batch, state = self._queue.popleft()
      self._consumed_state = state
      # Start the next transfer now so it overlaps with this step's compute.
      self._queue.append(self._fetch())
    return batch

  def get_state(self) -> bytes:
    return json.dumps(self._consumed_state).encode()

  def set_state(self, state: bytes) -> None:
    with self._lock:
      self._queue.clear()
      self._it = iter(self._dataset)
      self._it.set_state(json.loads(state))
      self._consumed_state = self._it.get_state()

  def start_prefetch(self) -> None:
    pass
