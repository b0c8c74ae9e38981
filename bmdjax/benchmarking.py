"""Timing the project's own code: training step, input pipeline, data prep,
screening latency and bfloat16 against float32 predictions.

`run` returns the JSON-able figures bmdjax benchmark prints, `markdown` the
BENCHMARKS.md table of them; what each part measures is in that command's help.
Speed targets live in BENCHMARKS.md, never asserted here.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np

from bmdjax import config_lib, distributed, inference, input_pipeline, tasks, training

PARTS = ("train", "input", "prep", "predict", "precision")

# Datasheet dense peaks in TFLOP/s, by a lower-case substring of device_kind
# (first match wins). float32 is TF32 on tensor cores, which XLA uses for
# float32 matmuls and convolutions on these GPUs at default precision.
NOMINAL_TFLOPS = (
    ("h100 pcie", {"bfloat16": 756.0, "float32": 378.0}),
    ("h100", {"bfloat16": 989.4, "float32": 494.7}),  # SXM (80GB HBM3)
    ("h200", {"bfloat16": 989.4, "float32": 494.7}),
    ("a100", {"bfloat16": 312.0, "float32": 156.0}),
)
# Shapes the optimiser's schedule is built for; the figures do not depend on it.
NOMINAL_STEPS_PER_EPOCH = 100


# ----------------------------------------------------------------- machine


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def hardware() -> dict:
  d = jax.devices()[0]
  mem = None
  try:
    with open("/proc/meminfo") as f:
      mem = round(int(f.readline().split()[1]) / 2**20, 1)
  except (OSError, ValueError, IndexError):
    pass
  return {"platform": d.platform, "device_kind": d.device_kind,
          "device_count": jax.device_count(), "process_count": jax.process_count(),
          "cpu_model": _cpu_model(), "cpu_cores": os.cpu_count(),
          "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(
              os, "sched_getaffinity") else os.cpu_count(),
          "memory_gib": mem, "load_average": [round(x, 2) for x in os.getloadavg()]}


def versions() -> dict:
  import flax
  import grain
  import jaxlib
  import optax
  return {"python": platform.python_version(), "jax": jax.__version__,
          "jaxlib": jaxlib.__version__, "flax": flax.__version__,
          "optax": optax.__version__, "grain": getattr(grain, "__version__", None),
          "numpy": np.__version__}


def nominal_peak(device_kind: str) -> dict | None:
  """Datasheet dense TFLOP/s of a known accelerator, else None."""
  kind = device_kind.lower()
  for key, peak in NOMINAL_TFLOPS:
    if key in kind:
      return dict(peak)
  return None


def matmul_peak(dtype: str, n: int, reps: int = 10) -> float:
  """Measured FLOP/s of an n x n x n matmul in `dtype` on the first device:
  the ceiling MFU is quoted against (best of three timings of `reps` calls)."""
  a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), dtype)
  f = jax.jit(lambda a, b: a @ b).lower(a, a).compile()
  f(a, a).block_until_ready()
  best = float("inf")
  for _ in range(3):
    t = time.perf_counter()
    for _ in range(reps):
      out = f(a, a)
    out.block_until_ready()
    best = min(best, (time.perf_counter() - t) / reps)
  return 2.0 * n**3 / best


def peak_memory() -> int | None:
  """Peak bytes in use on the first device; None where the backend keeps no
  statistics (the CPU)."""
  stats = jax.local_devices()[0].memory_stats()
  return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per program
    cost = cost[0]
  return float(cost.get("flops", 0.0)) if cost else 0.0


# ----------------------------------------------------------------- train


def synthetic_batch(config, size: int, scaler, sharding) -> dict:
  """A training batch of the configured shapes, already on the devices."""
  rng = np.random.default_rng(0)
  b = input_pipeline.per_process_batch(config.batch_size)
  k, t = config.model.num_inputs, config.model.num_outputs
  batch = {"x": rng.integers(0, 65536, (b, k, size, size), np.uint16),
           "y": np.broadcast_to(scaler.mean, (b, t)).astype(np.float32),
           "mask": np.ones((b, t), np.float32)}
  return input_pipeline.to_global(batch, sharding)


def _time_steps(step, state, batches, steps: int):
  """Runs `steps` steps; only the final result is waited for (as in the
  training loop, nothing is fetched to the host on the way)."""
  metrics, t = None, time.perf_counter()
  for _ in range(steps):
    state, metrics = step(state, next(batches))
  jax.block_until_ready((state, metrics))
  return state, metrics, time.perf_counter() - t


def bench_train(config, *, size: int, steps: int, warmup: int, scaler,
                peak: dict, source=None) -> dict:
  """The training step of bmdjax.train, timed; see the module docstring."""
  mesh = distributed.data_mesh()
  input_pipeline.check_batch(config.batch_size, mesh)
  replicated, data_sharding = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  graphdef, params, rest = inference.init_model_state(config)
  tx, _ = training.make_optimizer(config.optim, NOMINAL_STEPS_PER_EPOCH * config.num_epochs,
                                  NOMINAL_STEPS_PER_EPOCH)
  loss_fn = tasks.bmd_loss_fn(graphdef, config, scaler)
  step_fn = training.jit_train_step(training.make_train_step(loss_fn, tx, config.seed), mesh)
  state = jax.device_put({"params": params, "rest": rest, "opt": tx.init(params),
                          "step": jnp.zeros((), jnp.int32)}, replicated)
  batch = synthetic_batch(config, size, scaler, data_sharding)
  dtypes = sorted({str(x.dtype) for x in jax.tree.leaves((state["params"], state["opt"]))
                   if jnp.issubdtype(x.dtype, jnp.floating)})

  t = time.perf_counter()
  lowered = step_fn.lower(state, batch)
  lower_s = time.perf_counter() - t
  t = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t
  flops_per_device = _flops(compiled)
  per_device_batch = config.batch_size // mesh.size
  flops_per_sample = flops_per_device / per_device_batch
  memory = compiled.memory_analysis()

  forever = iter(lambda: batch, None)
  state, _, _ = _time_steps(compiled, state, forever, warmup)
  state, metrics, seconds = _time_steps(compiled, state, forever, steps)
  step_s = seconds / steps
  achieved = flops_per_device / step_s  # per device
  dtype = str(config.model.dtype)
  nominal = peak.get("nominal_tflops")
  out = {
      "batch_size": config.batch_size, "per_device_batch": per_device_batch,
      "crop_size": size, "num_inputs": config.model.num_inputs, "dtype": dtype,
      "state_dtypes": dtypes, "steps": steps, "warmup": warmup,
      "samples_per_second": config.batch_size / step_s, "step_time_ms": 1e3 * step_s,
      "flops_per_sample": flops_per_sample, "flops_per_step": flops_per_device * mesh.size,
      "tflops_per_second_per_device": achieved / 1e12,
      "mfu": achieved / peak["measured_flops"][dtype],
      "mfu_nominal": achieved / (1e12 * nominal[dtype]) if nominal else None,
      "mfu_against": f"measured {dtype} matmul peak of one device",
      "lower_s": lower_s, "compile_s": compile_s,
      "peak_memory_bytes": peak_memory(),
      "compiled_memory_bytes": {
          "arguments": int(memory.argument_size_in_bytes),
          "outputs": int(memory.output_size_in_bytes),
          "aliased": int(memory.alias_size_in_bytes),  # donated state
          "temporaries": int(memory.temp_size_in_bytes)} if memory else None,
      "loss_finite": bool(jax.device_get(metrics["finite"])),
  }
  if out["peak_memory_bytes"] is None:
    out["peak_memory_note"] = (f"{jax.devices()[0].platform} keeps no allocator "
                               "statistics; compiled_memory_bytes is XLA's plan")
  if source is not None:
    it = input_pipeline.DeviceIterator(input_pipeline.train_dataset(config, source),
                                       data_sharding, depth=config.input.prefetch_batches)
    state, _, _ = _time_steps(compiled, state, it, max(warmup, 1))
    state, _, seconds = _time_steps(compiled, state, it, steps)
    out["fed_samples_per_second"] = config.batch_size * steps / seconds
    out["fed_step_time_ms"] = 1e3 * seconds / steps
  return out


# ----------------------------------------------------------------- input


def bench_input(config, source, *, batches: int, warmup: int) -> dict:
  """input_pipeline.train_dataset without a model: host batches/s, and through
  DeviceIterator onto the devices (waiting for each transfer)."""
  mesh = distributed.data_mesh()
  sharding = NamedSharding(mesh, P("data"))
  it = iter(input_pipeline.train_dataset(config, source))
  for _ in range(warmup):
    next(it)
  t = time.perf_counter()
  for _ in range(batches):
    batch = next(it)
  host_s = time.perf_counter() - t
  dev = input_pipeline.DeviceIterator(input_pipeline.train_dataset(config, source),
                                      sharding, depth=config.input.prefetch_batches)
  for _ in range(warmup):
    next(dev)
  t = time.perf_counter()
  for _ in range(batches):
    jax.block_until_ready(next(dev))
  device_s = time.perf_counter() - t
  b = input_pipeline.per_process_batch(config.batch_size)
  return {"batch_size": config.batch_size, "batches": batches,
          "read_threads": config.input.read_threads,
          "prefetch_batches": config.input.prefetch_batches,
          "records": len(source), "bytes_per_sample": int(batch["x"][0].nbytes),
          "samples_per_second": b * batches / host_s,
          "to_device_samples_per_second": b * batches / device_s}


# ----------------------------------------------------------------- prep


def make_cohort(out: str, studies: int, spacing_mm, workers: int | None) -> str:
  """A synthetic cohort of exactly `studies` studies (not timed)."""
  from data_prep import synthesize
  synthesize.generate(out, patients=studies, seed=0, spacing_range=tuple(spacing_mm),
                      followup_fraction=0.0, workers=workers, ceiling_samples=2000,
                      progress=False)
  return out


def prep_grids(config) -> tuple[int, ...]:
  return (config.data.grid,) if config.data.inputs == "patches" else ()


def bench_prep(config, cohort: str, out: str, *, size: int, workers: int) -> dict:
  """data_prep.build over the cohort, timed end to end."""
  from data_prep import build
  t = time.perf_counter()
  summary = build.build(os.path.join(cohort, "dicom"), os.path.join(cohort, "labels.csv"),
                        os.path.join(cohort, "landmarks.csv"), out, size=size,
                        grids=prep_grids(config), workers=workers)
  seconds = time.perf_counter() - t
  n = summary["counts"]["ok"]
  info = {}  # a synthetic cohort says how it was rendered
  if os.path.isfile(os.path.join(cohort, "cohort.json")):
    with open(os.path.join(cohort, "cohort.json")) as f:
      info = json.load(f)
  spacing = info.get("settings", {}).get("spacing_mm")
  image_rows = info.get("summary", {}).get("image_rows_min_max")
  return {"studies": n, "workers": workers, "size": size, "grids": list(prep_grids(config)),
          "spacing_mm": spacing, "image_rows_min_max": image_rows, "seconds": seconds,
          "studies_per_second": n / seconds}


# ----------------------------------------------------------------- predict


def untrained_model(config, data_dir: str):
  """A predictor.Model with freshly initialised weights, in memory: screening
  takes as long with them as with trained ones."""
  from bmdjax import predictor  # pylint: disable=import-outside-toplevel
  cfg = ml_collections.ConfigDict(config.to_dict())
  cfg.data.dir = os.path.abspath(data_dir)
  prep = input_pipeline.load_prep_summary(data_dir)
  graphdef, params, rest = inference.init_model_state(cfg)
  return predictor.Model(cfg, params, rest, prep["target_stats"], prep["size"],
                         graphdef=graphdef, description=f"{cfg.model.name} (initialised)")


def load_detector(workdir: str):
  """Radiograph -> landmarks [16, 2], from a trained landmark detector run
  (`python -m bmdjax.train --config=configs/landmarks.py`)."""
  from bmdjax import detector  # pylint: disable=import-outside-toplevel
  found = detector.LandmarkDetector.from_workdir(workdir, batch_size=1)
  return lambda radiograph: found.detect([radiograph])[0]["landmarks"]


def bench_predict(model, cohort: str, *, studies: int, detect=None) -> dict:
  """Latency of screening one study, by stage, as bmdjax.predict runs it.

  Stages: read the DICOM; landmarks (`detect(radiograph)` when a detector is given,
  else the row of landmarks.csv, whose look-up is reported as `lookup_ms`);
  crops (data_prep.build.process_study); model (jitted forward and fetch).
  Medians over `studies` studies after one warm-up study (which compiles).
  Also the whole `prediction.predict_studies` call. `model`: a trained run's
  workdir (its restore is timed as model_load_s) or a predictor.Model.
  """
  import pandas as pd
  from bmdjax import prediction, predictor
  from data_prep import build, dicom_io
  images = pd.read_csv(os.path.join(cohort, "labels.csv"))["image"].tolist()
  paths = [os.path.join(cohort, "dicom", im) for im in images[:studies + 1]]
  table = build.load_landmarks(os.path.join(cohort, "landmarks.csv"))
  t = time.perf_counter()
  if not isinstance(model, predictor.Model):
    model = predictor.Model.from_workdir(model)
  load_s = time.perf_counter() - t

  def one(path):
    times = {}
    t0 = time.perf_counter()
    radiograph = dicom_io.read_radiograph(path)
    t1 = time.perf_counter()
    if detect is not None:
      lm = np.asarray(detect(radiograph))
    else:
      lm, why = prediction.match_landmarks(table, path)
      if why:
        raise ValueError(why)
    t2 = time.perf_counter()
    crops = build.process_study(path, lm, model.spec, radiograph=radiograph)
    t3 = time.perf_counter()
    model(crops)
    t4 = time.perf_counter()
    times["read_dicom_ms"] = 1e3 * (t1 - t0)
    times["detect_ms" if detect is not None else "lookup_ms"] = 1e3 * (t2 - t1)
    times["crops_ms"] = 1e3 * (t3 - t2)
    times["model_ms"] = 1e3 * (t4 - t3)
    times["total_ms"] = 1e3 * (t4 - t0)
    return times

  t = time.perf_counter()
  one(paths[0])
  first_s = time.perf_counter() - t
  timed = [one(p) for p in paths[1:] or paths]
  out = {"studies": len(timed), "model_load_s": load_s, "first_study_s": first_s,
         "landmarks": "detected" if detect is not None else "given (landmarks.csv)",
         "detect_ms": None}
  out.update({k: float(np.median([x[k] for x in timed])) for k in timed[0]})
  out["latency_ms"] = out["total_ms"]
  if detect is None:
    out["detect_note"] = "no detector given (--landmark_workdir): landmarks from landmarks.csv"
  t = time.perf_counter()
  results = prediction.predict_studies(model, paths[1:] or paths, landmarks=table, sex="F")
  out["predict_studies_s"] = time.perf_counter() - t
  out["refused"] = sum(r["status"] != "ok" for r in results)
  return out


# ----------------------------------------------------------------- precision


def bench_precision(data_dir: str, model, split: str = "test") -> dict:
  """Predictions of a model's weights (a workdir's best, or a predictor.Model's)
  with float32 and with bfloat16 compute, in g/cm2, over a split of `data_dir`."""
  from bmdjax import predictor  # pylint: disable=import-outside-toplevel
  from bmdjax import metrics
  mesh = distributed.data_mesh()
  sharding = NamedSharding(mesh, P("data"))
  if not isinstance(model, predictor.Model):
    model = predictor.Model.from_workdir(model)
  config, scaler = model.config, model.scaler
  source = input_pipeline.open_split(data_dir, split)
  preds = {}
  for dtype in ("float32", "bfloat16"):
    cfg = ml_collections.ConfigDict(config.to_dict())
    cfg.model.dtype = dtype
    graphdef, _, _ = inference.init_model_state(cfg)
    df = inference.predict_split(cfg, inference.make_predict_fn(graphdef), model.params,
                                 model.rest, source, sharding, scaler, desc=dtype)
    preds[dtype] = df
  cols = [f"pred_{v}" for v in scaler.names]
  p32 = preds["float32"][cols].to_numpy(np.float64)
  p16 = preds["bfloat16"][cols].to_numpy(np.float64)
  diff = np.abs(p16 - p32)
  truth = preds["float32"][[f"true_{v}" for v in scaler.names]].to_numpy(np.float64)
  ok = np.isfinite(truth)
  return {"split": split, "records": int(len(p32)), "weights_step": model.step,
          "max_abs_diff_g_cm2": float(diff.max()), "mean_abs_diff_g_cm2": float(diff.mean()),
          "r_bf16_vs_f32": metrics.pearson_r(p32.ravel(), p16.ravel()),
          "prediction_sd_g_cm2": float(p32.std()),
          "rmse_vs_truth": {d: metrics.rmse(truth[ok], preds[d][cols].to_numpy()[ok])
                            for d in preds},
          "r_vs_truth": {d: metrics.pearson_r(truth[ok], preds[d][cols].to_numpy()[ok])
                         for d in preds}}


# ----------------------------------------------------------------- all


def run(config, what=PARTS, *, size: int | None = None, steps: int = 20, warmup: int = 3,
        data: str | None = None, cohort: str | None = None, workdir: str | None = None,
        input_batches: int = 30, prep_studies: int = 32, prep_workers: int | None = None,
        spacing_mm=(0.14, 0.2), predict_studies: int = 8, detect=None,
        matmul_size: int | None = None, tmp: str | None = None) -> dict:
  """Runs the parts in `what`; returns the JSON-able results. Synthetic data
  and runs go to `tmp` (default: a temporary folder, removed afterwards)."""
  config_lib.finalize(config)
  what = tuple(what)
  unknown = set(what) - set(PARTS)
  if unknown:
    raise ValueError(f"unknown --what {sorted(unknown)}; known: {', '.join(PARTS)}")
  if tmp is None:
    with tempfile.TemporaryDirectory(prefix="bmdjax-bench-") as tmp:
      return run(config, what, size=size, steps=steps, warmup=warmup, data=data,
                 cohort=cohort, workdir=workdir, input_batches=input_batches,
                 prep_studies=prep_studies, prep_workers=prep_workers,
                 spacing_mm=spacing_mm, predict_studies=predict_studies, detect=detect,
                 matmul_size=matmul_size, tmp=tmp)
  if data:
    known = input_pipeline.load_prep_summary(data)["size"]
    if size is not None and int(size) != int(known):
      raise ValueError(f"--size={size} but {data} holds {known}x{known} crops")
    size = int(known)
  size = int(size or 256)
  prep_workers = prep_workers or os.cpu_count() or 1
  out = {"what": list(what), "hardware": hardware(), "versions": versions(),
         "compilation_cache": jax.config.jax_compilation_cache_dir or None,
         "model": {k: config.model[k] for k in ("name", "backbone", "width", "dtype",
                                                "num_inputs", "num_outputs")},
         "batch_size": config.batch_size, "crop_size": size}

  # Data first (before the accelerator work): build forks worker processes.
  need_data = any(w in what for w in ("input", "predict", "precision"))
  if ("prep" in what or (need_data and not data)) and not cohort:
    t = time.perf_counter()
    cohort = make_cohort(os.path.join(tmp, "cohort"), prep_studies, spacing_mm, prep_workers)
    out["synthesize_s"] = time.perf_counter() - t
  if "prep" in what or (need_data and not data):
    prep = bench_prep(config, cohort, os.path.join(tmp, "prepared"), size=size,
                      workers=prep_workers)
    if "prep" in what:
      out["prep"] = prep
    data = data or os.path.join(tmp, "prepared")
  if "predict" in what and not cohort:
    cohort = make_cohort(os.path.join(tmp, "cohort"), predict_studies + 1, spacing_mm,
                         prep_workers)
  stats = (input_pipeline.load_prep_summary(data)["target_stats"] if data else
           {v: {"mean": 1.0, "std": 0.15} for v in ("L1", "L2", "L3", "L4")})
  scaler = inference.TargetScaler(stats, config.target)
  source = (input_pipeline.open_split(data, config.data.train_split) if data else None)

  if "input" in what:
    out["input"] = bench_input(config, source, batches=input_batches, warmup=2)
  if "train" in what:
    dtype = str(config.model.dtype)
    n = matmul_size or (1024 if jax.devices()[0].platform == "cpu" else 8192)
    out["peak"] = {"matmul_size": n, "nominal_tflops": nominal_peak(jax.devices()[0].device_kind),
                   "measured_flops": {d: matmul_peak(d, n) for d in
                                      dict.fromkeys(("float32", "bfloat16", dtype))}}
    out["train"] = bench_train(config, size=size, steps=steps, warmup=warmup, scaler=scaler,
                               peak=out["peak"], source=source)
    if "input" in out:
      out["input"]["times_training_rate"] = (out["input"]["samples_per_second"] /
                                             out["train"]["samples_per_second"])
  model = workdir
  if ("predict" in what or "precision" in what) and not workdir:
    model = untrained_model(config, data)
    out["weights"] = "initialised"
  elif workdir:
    out["weights"] = f"trained ({workdir})"
  if "predict" in what:
    out["predict"] = bench_predict(model, cohort, studies=predict_studies, detect=detect)
  if "precision" in what:
    out["precision"] = bench_precision(data, model)
  out["hardware"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
  return out


# ----------------------------------------------------------------- report


def _si(x, unit=""):
  for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
    if abs(x) >= scale:
      return f"{x / scale:.3g} {prefix}{unit}"
  return f"{x:.3g} {unit}"


def _rate(x: float) -> str:
  return f"{x:.3g}" if x < 100 else f"{x:.0f}"


def _ms(x: float) -> str:
  return f"{x / 1e3:.1f} s" if x >= 1e4 else f"{x:.3g} ms" if x < 100 else f"{x:.0f} ms"


def markdown(results: dict) -> str:
  """A BENCHMARKS.md table of the results."""
  h, m = results["hardware"], results["model"]
  rows = []
  where = (f"{h['device_count']} x {h['device_kind']}" if h["platform"] != "cpu"
           else f"CPU, {h['cpu_cores_usable']} cores ({h['cpu_model']})")
  setup = (f"{m['name']} {m['backbone']} width {m['width']}, {m['num_inputs']} crops of "
           f"{results['crop_size']}px, {m['dtype']}, batch {results['batch_size']}")
  if "train" in results:
    t, p = results["train"], results["peak"]
    mem = t["peak_memory_bytes"]
    rows.append(("train step", f"**{_rate(t['samples_per_second'])} samples/s**, "
                 f"{_ms(t['step_time_ms'])}/step"))
    rows.append(("FLOPs (XLA cost analysis)", f"{_si(t['flops_per_sample'], 'FLOP')}/sample, "
                 f"{t['tflops_per_second_per_device']:.3g} TFLOP/s per device"))
    nominal = (f", {100 * t['mfu_nominal']:.1f}% of datasheet" if t["mfu_nominal"] else "")
    rows.append(("MFU", f"{100 * t['mfu']:.1f}% of the measured {m['dtype']} matmul peak "
                 f"({_si(p['measured_flops'][m['dtype']], 'FLOP/s')}){nominal}"))
    rows.append(("compile", f"{t['compile_s']:.1f} s (+ {t['lower_s']:.1f} s tracing)"))
    rows.append(("peak device memory", _si(mem, "B") if mem is not None else
                 f"n/a on CPU (XLA plan: {_si(t['compiled_memory_bytes']['temporaries'], 'B')} "
                 "temporaries)"))
    if "fed_samples_per_second" in t:
      rows.append(("train step fed by the input pipeline",
                   f"{_rate(t['fed_samples_per_second'])} samples/s"))
  if "input" in results:
    i = results["input"]
    ratio = (f", {i['times_training_rate']:.1f}x the training rate"
             if "times_training_rate" in i else "")
    rows.append(("input pipeline", f"**{_rate(i['samples_per_second'])} samples/s** host, "
                 f"{_rate(i['to_device_samples_per_second'])} to device "
                 f"({i['read_threads']} threads{ratio})"))
  if "prep" in results:
    r = results["prep"]
    rows.append(("data prep", f"**{_rate(r['studies_per_second'])} studies/s** ({r['studies']} "
                 f"studies at {r['spacing_mm']} mm, {r['workers']} workers, {r['size']}px)"))
  if "predict" in results:
    r = results["predict"]
    lm = (f"detect {_ms(r['detect_ms'])}" if r["detect_ms"] is not None
          else f"landmarks given, no detection ({_ms(r['lookup_ms'])} look-up)")
    rows.append(("predict, per study", f"**{_ms(r['latency_ms'])}**: read "
                 f"{_ms(r['read_dicom_ms'])}, {lm}, crops {_ms(r['crops_ms'])}, model "
                 f"{_ms(r['model_ms'])} (model load {r['model_load_s']:.1f} s, once)"))
  if "precision" in results:
    r = results["precision"]
    r_between = ("n/a" if r["r_bf16_vs_f32"] is None else f"{r['r_bf16_vs_f32']:.5f}")
    rows.append(("bf16 vs f32 predictions", f"max {r['max_abs_diff_g_cm2']:.4f}, mean "
                 f"{r['mean_abs_diff_g_cm2']:.4f} g/cm2, r {r_between} "
                 f"({r['records']} {r['split']} studies, {results['weights']} weights)"))
  load = f"load average {h['load_average'][0]} at start, {h.get('load_average_end', ['?'])[0]} at end"
  lines = [f"{where}; {setup}; {load}", "", "| what | figure |",
           "|---|---|"]
  lines += [f"| {a} | {b} |" for a, b in rows]
  return "\n".join(lines)
