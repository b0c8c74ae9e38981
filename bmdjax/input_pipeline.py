"""grain input pipeline over the prepared ArrayRecord shards.

The training order is defined on the whole split, not per process: each epoch
is one permutation of all records, cut into global batches, and process p of P
reads only rows [p*b, (p+1)*b) of every global batch (b = batch_size / P). So no
record is read twice per epoch, and 1 process or P processes train on the same
global batches (see `train_dataset`). Evaluation reads records p, p+P, ... on
process p (`eval_batches`). Batches go to the devices as global `jax.Array`s
sharded over the mesh's `data` axis. Crops stay uint16 until they are on the
device (half the host->device traffic of float32).
"""

from __future__ import annotations

import collections
import json
import os
import threading

import grain
import jax
import numpy as np

from data_prep.schema import VERTEBRAE


def dataset_dir(data_dir: str) -> str:
  """The TFDS folder inside a data_prep.build or data_prep.build_landmarks
  output (or the folder itself)."""
  from data_prep import build, build_landmarks  # pylint: disable=import-outside-toplevel  (TFDS)
  for candidate in (build.dataset_dir(data_dir), build_landmarks.dataset_dir(data_dir),
                    data_dir):
    if os.path.isfile(os.path.join(candidate, "dataset_info.json")):
      return candidate
  raise FileNotFoundError(
      f"no prepared dataset in {data_dir!r}: run `bmdjax prepare "
      f"--out={data_dir} ...` first, or set --config.data.dir")


def open_split(data_dir: str, split: str):
  """Random-access source of one split."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel  (slow; readers only)
  builder = tfds.builder_from_directory(dataset_dir(data_dir))
  if split not in builder.info.splits:
    raise ValueError(f"split {split!r} not in {data_dir} (has: {list(builder.info.splits)})")
  return builder.as_data_source(split)


def load_prep_summary(data_dir: str) -> dict:
  path = os.path.join(data_dir, "prep.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"{path} not found: {data_dir!r} is not a prepared dataset; make one with "
        "`bmdjax prepare --out=DIR ...` (`bmdjax prepare-landmarks` for the detector) and "
        "pass --config.data.dir=DIR")
  with open(path) as f:
    return json.load(f)


def landmark_source(prep: dict) -> str:
  """"detected" when the dataset's landmarks came from a detector (bmdjax
  prepare --landmark_workdir), else "given" (a landmarks.csv)."""
  return "detected" if (prep.get("inputs") or {}).get("landmark_workdir") else "given"


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
  return global_batch // jax.process_count()


def check_batch(global_batch: int, mesh) -> None:
  """The global batch must split evenly over the mesh's devices."""
  per_process_batch(global_batch)
  if global_batch % mesh.size:
    raise ValueError(f"batch_size {global_batch} is not divisible by the {mesh.size} "
                     f"devices; use a multiple of {mesh.size} (--config.batch_size)")


TRAIN_KEYS = ("x", "y", "mask")


def train_dataset(config, source, example_fn=None,
                  keys=TRAIN_KEYS) -> grain.IterDataset:
  """Endless; this process's share of every global batch.

  `example_fn` (default: the BMD `make_example_fn(config)`) turns a record
  into arrays, of which `keys` go to the device (bmdjax/tasks.py).

  The global stream is the split reshuffled each epoch (seed
  `input.shuffle_seed` + epoch) and repeated; global batch k is its records
  [k*B, (k+1)*B), batches running on across epoch boundaries (nothing is
  dropped). It is cut into chunks of b = B/P records and process p takes chunks
  p, p+P, ..., i.e. rows [p*b, (p+1)*b) of each global batch, in the order the
  mesh lays the processes' devices out (`distributed.data_mesh`). Hence:
  every record is read by one process once per epoch (each process reads
  about n/P of them, not exactly); the global batches, and so the training,
  are the same for any number of processes; and after `step` steps every
  process's iterator is at position `step`, whatever the topology.
  """
  ds = grain.MapDataset.source(source)
  ds = ds.shuffle(seed=config.input.shuffle_seed).repeat(None)
  example = example_fn or make_example_fn(config)
  ds = ds.map(lambda r: {k: v for k, v in example(r).items() if k in keys})
  ds = ds.batch(per_process_batch(config.batch_size), drop_remainder=True)
  ds = ds[jax.process_index()::jax.process_count()]
  # grain reads at most prefetch_buffer_size elements (here: batches) at once,
  # so a buffer smaller than read_threads would leave threads idle.
  return ds.to_iter_dataset(grain.ReadOptions(
      num_threads=config.input.read_threads,
      prefetch_buffer_size=max(config.input.prefetch_batches, config.input.read_threads, 1)))


def steps_per_epoch(config, num_records: int) -> int:
  """Global batches per pass over the split: floor(n / batch_size), the same on
  every process (batches straddle epoch boundaries, so no record is skipped)."""
  return max(num_records // config.batch_size, 1)


def num_eval_batches(config, num_records: int, batch_size: int | None = None) -> int:
  """Batches of `eval_batches`: the same on every process."""
  batch_size = batch_size or per_process_batch(config.batch_size)
  largest_share = -(-num_records // jax.process_count())
  return max(-(-largest_share // batch_size), 1)


def eval_batches(config, source, batch_size: int | None = None, example_fn=None):
  """One ordered pass over this process's slice, padded to whole batches.

  Process p of P reads records p, p+P, ... (floor(n/P) or ceil(n/P) of them).
  Every process yields `num_eval_batches` batches, since the sharded predict
  step is collective; rows past its share are padding. Yields (batch, meta,
  valid): `meta` holds patient_id, image and the record `index` in the split
  of the real rows, and `valid` marks them.
  """
  batch_size = batch_size or per_process_batch(config.batch_size)
  fn = example_fn or make_example_fn(config)
  indices = list(range(jax.process_index(), len(source), jax.process_count()))
  ds = grain.MapDataset.source(source)[jax.process_index()::jax.process_count()]
  ds = ds.map(lambda r: (fn(r), _meta_fn(r)))
  it = iter(ds.to_iter_dataset(grain.ReadOptions(
      num_threads=config.input.read_threads, prefetch_buffer_size=2 * batch_size)))
  pad = None
  for start in range(0, num_eval_batches(config, len(source), batch_size) * batch_size,
                     batch_size):
    items = [next(it) for _ in range(max(min(batch_size, len(indices) - start), 0))]
    n = len(items)
    for (_, m), i in zip(items, indices[start:]):
      m["index"] = i
    pad = items[-1] if items else pad or (fn(source[0]), None)
    items += [pad] * (batch_size - n)
    batch = {k: np.stack([ex[k] for ex, _ in items]) for k in items[0][0]}
    meta = [m for _, m in items[:n]]
    yield batch, meta, np.arange(batch_size) < n


def to_global(batch: dict, sharding) -> dict:
  """Process-local numpy batch -> global jax.Arrays sharded over the mesh."""
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def to_local(x: jax.Array) -> np.ndarray:
  """Global array split over its first axis -> this process's rows, in the
  order `to_global` took them (the whole array on a single process)."""
  shards = {s.index[0].indices(x.shape[0]): s for s in x.addressable_shards}
  return np.concatenate([np.asarray(shards[k].data) for k in sorted(shards)])


class DeviceIterator:
  """Keeps `depth` batches in flight to the devices.

  The grain iterator runs ahead of training by the prefetch depth; a resumed
  run `seek`s to the batch after the last one *consumed* (its step), so a
  restore replays nothing and skips nothing. get_state/set_state follow
  grain's iterator protocol.
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

  def seek(self, position: int) -> None:
    """Restarts at the `position`-th batch of the stream: the position after
    `position` training steps in any topology (see `train_dataset`)."""
    state = iter(self._dataset).get_state()
    if set(state) != {"next_index"}:
      raise NotImplementedError(f"cannot seek a grain iterator with state {state}")
    self.set_state(json.dumps({"next_index": int(position)}).encode())
