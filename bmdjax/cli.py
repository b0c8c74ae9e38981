"""What every command line shares: exit statuses and how usage errors end."""

from __future__ import annotations

import os
import re
import shlex
import sys

# Exit statuses: 0 done; 1 the command ran but some input (a study) was refused
# or failed; 2 a usage error (bad flag, config or path): nothing was done.
EXIT_REFUSED = 1
EXIT_USAGE = 2

_command_line: str | None = None  # set by run()


def command_line() -> str | None:
  """The running command as the user typed it (`bmdjax benchmark --config=X`
  or `python -m bmdjax.benchmark --config=X`), so a result can say how to make
  it again; None outside `run`."""
  return _command_line


def _invoked_as(argv0: str) -> list[str]:
  """How the command was started: the `bmdjax NAME` of the console command,
  `python -m MODULE`, or `python FILE`."""
  if not argv0.endswith(".py"):
    return argv0.split()  # "bmdjax benchmark" from bmdjax.commands
  spec = getattr(sys.modules.get("__main__"), "__spec__", None)
  return ["python", "-m", spec.name] if spec and spec.name else ["python", argv0]


def print_and_exit(text: str, status: int) -> None:
  try:
    print(text)
    sys.stdout.flush()
  except BrokenPipeError:  # `bmdjax --help | head`
    pass
  sys.exit(status)


def exit_usage(error) -> None:
  """Ends the command with a one-line message on stderr and status 2, no
  traceback: the user has something to fix, not a bug to report."""
  print(f"error: {one_line(error)}", file=sys.stderr)
  sys.exit(EXIT_USAGE)


def require(*names: str) -> None:
  """A usage error (status 2) naming the first of these flags left unset."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  for name in names:
    if not getattr(flags.FLAGS, name):
      exit_usage(f"--{name} is required (see --help)")


def one_line(error) -> str:
  """The message of `error` on one line; of a traceback quoted in it (config
  files are parsed under one), only the closing `Type: message` line."""
  text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
  if "Traceback (most recent call last)" in text:
    head, _, trace = text.partition("Traceback (most recent call last)")
    last = [l for l in trace.strip().splitlines() if l.strip()][-1]
    text = f"{head.strip()} {last.strip()}"
  text = re.sub(r"'{2,}", "'", text.replace("\\n", " ").replace("\\'", "'"))
  if "Did you mean" in text:  # ml_collections' KeyError of a mistyped field
    text = re.sub(r"'([\w.]+)' Did you mean", r"no config field '\1'; did you mean",
                  text.rstrip("'"))
  return " ".join(text.split())


def define_dicom_dir_flag():
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_string("dicom_dir", None, "Folder of the DICOM files; a study is named by its "
                      "path relative to it (`image` in labels.csv and landmarks.csv).")


def define_split_flags(fractions: tuple[str, str, str]):
  """The patient-level split and the worker pool of `prepare` and
  `prepare-landmarks` (their default fractions differ)."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_list("fractions", list(fractions), "train,validation,test patient fractions.")
  flags.DEFINE_integer("seed", 0, "Seed of the patient-level split.")
  flags.DEFINE_integer("workers", None, "Worker processes (default: all cores).")


def define_landmark_workdir_flag():
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_string("landmark_workdir", None, "Workdir of a trained landmark detector "
                      "(bmdjax train --config=landmarks); it places the landmarks of studies "
                      "that --landmarks does not give.")


def define_min_landmark_confidence_flag():
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_float("min_landmark_confidence", None, "Detected landmarks with a lower "
                     "confidence fail the low_confidence check and flag their study "
                     "(default: the detector config's checks.min_confidence).")


def define_detector_flags():
  """The trained landmark detector's flags, shared by `prepare` and `predict`."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  define_landmark_workdir_flag()
  flags.DEFINE_bool("keep_flagged", False, "Use studies whose detected landmarks fail the "
                    "plausibility checks too (their flags are still reported); by default "
                    "they are set aside as `flagged`.")
  define_min_landmark_confidence_flag()


def define_checkpoint_flag():
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "The run's weights: best "
                    "(the best validation score) or the latest checkpoint.")


def define_reference_flag():
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_string("reference", None, "Young-adult reference CSV (sex,vertebra,mean,sd) "
                      "for T-scores and osteoporosis status; default: the shipped table "
                      "(Biology Direct 2025, data_prep/data/tscore_reference.csv).")


def define_distributed_flags():
  """A multi-process run's settings outside SLURM/MPI (bmdjax.distributed),
  shared by `train` and `evaluate`."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_string("coordinator_address", None,
                      "host:port of process 0, for multi-process runs outside SLURM/MPI "
                      "(env BMDJAX_COORDINATOR).")
  flags.DEFINE_integer("num_processes", None,
                       "Number of processes (env BMDJAX_NUM_PROCESSES).")
  flags.DEFINE_integer("process_id", None,
                       "This process's index, 0..num_processes-1 (env BMDJAX_PROCESS_ID).")


def initialize_distributed():
  """bmdjax.distributed.initialize with the flags of define_distributed_flags."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from bmdjax import distributed  # pylint: disable=import-outside-toplevel
  f = flags.FLAGS
  distributed.initialize(f.coordinator_address, f.num_processes, f.process_id)


def define_screening_flags():
  """The screening layer's flags (intervals, referral threshold, recalibration),
  shared by `evaluate` and `predict`; all are fitted on the validation split."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from bmdjax import conformal, screening  # pylint: disable=import-outside-toplevel
  flags.DEFINE_float("level", conformal.DEFAULT_LEVEL, "Coverage of the split-conformal "
                     "prediction intervals, calibrated on the validation split.")
  flags.DEFINE_float("target_sensitivity", screening.DEFAULT_SENSITIVITY, "Osteoporosis "
                     "sensitivity on validation that fixes the 'refer for DXA' threshold "
                     "on predicted T.")
  flags.DEFINE_bool("recalibrate", False, "Put predictions on the linear calibration line "
                    "fitted on validation before T-scores, intervals and screening "
                    "(before/after calibration is reported either way).")


HELP_FLAGS = ("--help", "-help", "-h", "--helpshort", "-?", "--helpfull")


def _help_text(doc: str | None, prog: str) -> str:
  from absl import flags  # pylint: disable=import-outside-toplevel
  out = [(doc or "").strip(), "", f"flags of {prog}:"]
  for module, defined in sorted(flags.FLAGS.flags_by_module_dict().items()):
    # absl names a module run as __main__ by its file path.
    ours = module.startswith(("bmdjax", "data_prep", "__main__")) or any(
        f"{os.sep}{p}{os.sep}" in module for p in ("bmdjax", "data_prep"))
    if not ours or not defined:
      continue  # the libraries' own flags (grain, array_record, absl)
    out.append(flags.FLAGS.module_help(module).split("\n", 1)[-1])
  out += ["", "  --verbosity: 0 also shows INFO logs (of orbax, TFDS, ...), 1 DEBUG; "
          "default: warnings only", "",
          "Exit status: 0 done; 1 some study refused or failed; 2 usage error."]
  return "\n".join(out)


def _resolve_configs(args: list[str]) -> list[str]:
  """--config=NAME[:args] or --config=PATH[:args] -> an absolute path, so a
  config is found by name from any folder (config_lib.resolve)."""
  from bmdjax import config_lib  # pylint: disable=import-outside-toplevel
  out, i = [], 0
  while i < len(args):
    a = args[i]
    if a.startswith("--config="):
      a = "--config=" + config_lib.resolve(a.split("=", 1)[1])
    elif a == "--config" and i + 1 < len(args):
      out.append(a)
      i += 1
      a = config_lib.resolve(args[i])
    out.append(a)
    i += 1
  return out


def quiet(verbosity_given: bool) -> None:
  """Warnings and our own progress only, unless --verbosity was given: the
  libraries (orbax, TFDS, grain) log INFO lines by the hundred."""
  from absl import logging  # pylint: disable=import-outside-toplevel
  import logging as std_logging  # pylint: disable=import-outside-toplevel
  if verbosity_given:
    return
  logging.set_verbosity(logging.WARNING)
  for name in ("orbax", "tensorflow_datasets", "grain", "jax._src.xla_bridge"):
    std_logging.getLogger(name).setLevel(std_logging.WARNING)


def run(main, define_flags, argv=None, doc: str | None = None) -> None:
  """Runs an absl `main` as a command: `define_flags()` first; --help prints
  `doc` and the flags and exits 0; a bad flag, config or path ends with one
  line on stderr and status 2 (no traceback); the rest is absl's app.run."""
  from absl import app, flags  # pylint: disable=import-outside-toplevel
  from bmdjax import config_lib  # pylint: disable=import-outside-toplevel
  global _command_line
  argv = list(sys.argv if argv is None else argv)
  _command_line = shlex.join(_invoked_as(argv[0]) + argv[1:])
  if argv[0].endswith(".py"):  # python -m bmdjax.train: say "train"
    argv[0] = os.path.basename(argv[0])[:-3]
  prog = argv[0]
  define_flags()
  if any(a in HELP_FLAGS for a in argv[1:]):
    print_and_exit(_help_text(doc, prog), 0)
  try:
    argv = [prog] + _resolve_configs(argv[1:])
  except config_lib.ConfigError as e:
    exit_usage(e)
  verbosity_given = any(a.startswith(("--verbosity", "-v=", "--v=")) for a in argv[1:])

  def parse(args):
    try:
      return flags.FLAGS(args)
    except (flags.Error, config_lib.ConfigError, ValueError, KeyError, AttributeError,
            FileNotFoundError) as e:
      exit_usage(f"{prog}: {e}" if not str(e).startswith(prog) else e)

  def wrapped(args):
    quiet(verbosity_given)
    try:
      return main(args)
    except (app.UsageError, config_lib.ConfigError, FileNotFoundError,
            NotADirectoryError) as e:
      exit_usage(e)
    except SystemExit as e:
      if isinstance(e.code, str):  # data_prep's refusals of the input as a whole
        exit_usage(e.code.removeprefix("error: "))
      raise

  app.run(wrapped, argv=argv, flags_parser=parse)
