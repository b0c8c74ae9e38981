r"""How fast training, the input pipeline, data prep and screening run.

  python -m bmdjax.benchmark --config=attmulroi:dtype=bfloat16 \
      --what=train,input,prep,predict,precision --json=bench.json --markdown
  python -m bmdjax.benchmark --config=attmulroi:demo --size=32  # CPU size

Every part runs the project's own code, so the figures are those of a real run:
  train      the jitted step of bmdjax.train (same loss, optimiser, shardings,
             donation) on device-resident batches of the configured shapes:
             samples/s, step time, FLOPs per sample from XLA's cost analysis,
             MFU against the device's measured (and datasheet) matmul peak,
             compile time, peak device memory. With a prepared dataset at hand
             it also times the step fed by the real input pipeline, which shows
             whether the accelerator ever waits for data.
  input      input_pipeline.train_dataset alone (grain, no model), and through
             DeviceIterator onto the devices.
  prep       data_prep.build on a synthetic cohort: studies/s.
  predict    bmdjax.predict per study: read DICOM, landmarks, crops, model.
  precision  bfloat16 against float32 predictions of the same weights, g/cm2.

Without --data a small synthetic cohort is rendered and prepared in a temporary
folder, so every part runs standalone. Speed targets are stated in
BENCHMARKS.md, never asserted here or in tests.

JSON (main keys): command (as typed), config {file (resolved, with its
arguments), overrides, values (every field)}, hardware {platform, device_kind,
device_count, cpu_model, cpu_cores, load_average}, versions {python, jax,
jaxlib, flax, ...}, model, batch_size, crop_size, peak {measured_flops by
dtype, nominal_tflops}, train {samples_per_second, step_time_ms,
flops_per_sample, mfu, mfu_nominal, lower_s, compile_s, peak_memory_bytes
(null on CPU), compiled_memory_bytes, fed_samples_per_second}, input
{samples_per_second, to_device_samples_per_second, times_training_rate}, prep
{studies, studies_per_second}, predict {latency_ms, read_dicom_ms, detect_ms
(null without a detector), crops_ms, model_ms, model_load_s}, precision
{max_abs_diff_g_cm2, mean_abs_diff_g_cm2, r_bf16_vs_f32}.
"""

from __future__ import annotations

import json

from absl import app, flags
import jax
from ml_collections import config_flags

from bmdjax import benchmarking, cli

FLAGS = flags.FLAGS


def define_flags():
  """Defined on demand so that importing this module does not claim --config."""
  config_flags.DEFINE_config_file(
      "config", None, "Model config, e.g. attmulroi:dtype=bfloat16 (or a path); fields "
      "can be overridden, e.g. --config.batch_size=64.", lock_config=True)
  flags.DEFINE_list("what", list(benchmarking.PARTS),
                    f"Parts to run, any of {', '.join(benchmarking.PARTS)}.")
  flags.DEFINE_integer("steps", 20, "Timed training steps (and fed steps); at least 1.",
                       lower_bound=1)
  flags.DEFINE_integer("warmup", 3, "Untimed training steps after compilation.",
                       lower_bound=0)
  flags.DEFINE_integer("size", None, "Crop side in pixels (default: that of --data, "
                       "else 256 as in the paper; the demo uses 32).")
  flags.DEFINE_string("data", None, "A data_prep.build output; default: a synthetic "
                      "cohort prepared in a temporary folder.")
  flags.DEFINE_string("cohort", None, "A cohort (dicom/, labels.csv, landmarks.csv) "
                      "for prep (all of its studies) and predict; default: "
                      "--prep_studies synthetic ones.")
  flags.DEFINE_string("workdir", None, "A bmdjax.train workdir whose weights predict "
                      "and precision use; default: freshly initialised weights.")
  cli.define_landmark_workdir_flag()
  flags.DEFINE_integer("input_batches", 30, "Timed input-pipeline batches.")
  flags.DEFINE_integer("prep_studies", 32, "Synthetic studies rendered and prepared.")
  flags.DEFINE_integer("prep_workers", None, "data_prep.build workers (default: all cores).")
  flags.DEFINE_list("spacing_mm", ["0.14", "0.2"], "Pixel spacing range of the "
                    "synthetic radiographs (0.14-0.2 mm: realistic detectors).")
  flags.DEFINE_integer("predict_studies", 8, "Studies timed through bmdjax.predict.")
  flags.DEFINE_integer("matmul_size", None, "Side of the matmul measuring the peak "
                       "(default 8192 on accelerators, 1024 on CPU).")
  flags.DEFINE_string("json", None, "Write the results here as JSON.")
  flags.DEFINE_bool("markdown", False, "Also print the results as a BENCHMARKS.md table.")
  cli.define_distributed_flags()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  cli.initialize_distributed()
  if FLAGS.config is None:
    raise app.UsageError("--config is required, e.g. --config=attmulroi")
  unknown = sorted(set(FLAGS.what) - set(benchmarking.PARTS))
  if unknown:
    raise app.UsageError(f"unknown --what {unknown}; known: {', '.join(benchmarking.PARTS)}")
  detect = (benchmarking.load_detector(FLAGS.landmark_workdir) if FLAGS.landmark_workdir
            else None)
  results = benchmarking.run(
      FLAGS.config, FLAGS.what, size=FLAGS.size, steps=FLAGS.steps, warmup=FLAGS.warmup,
      data=FLAGS.data, cohort=FLAGS.cohort, workdir=FLAGS.workdir,
      input_batches=FLAGS.input_batches, prep_studies=FLAGS.prep_studies,
      prep_workers=FLAGS.prep_workers, spacing_mm=[float(s) for s in FLAGS.spacing_mm],
      predict_studies=FLAGS.predict_studies, detect=detect, matmul_size=FLAGS.matmul_size)
  # How to make these figures again: the command as typed, and the config it
  # resolved to (file and arguments, overrides, every field after finalize).
  results = {"command": cli.command_line(),
             "config": {"file": config_flags.get_config_filename(FLAGS["config"]),
                        "overrides": config_flags.get_override_values(FLAGS["config"]),
                        "values": FLAGS.config.to_dict()},
             **results}
  if jax.process_index() != 0:
    return
  text = json.dumps(results, indent=2)
  if FLAGS.json:
    with open(FLAGS.json, "w") as f:
      f.write(text + "\n")
    print(f"wrote {FLAGS.json}")
  else:
    print(text)
  if FLAGS.markdown:
    print("\n" + benchmarking.markdown(results))


if __name__ == "__main__":
  cli.run(main, define_flags, doc=__doc__)
