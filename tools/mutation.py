"""Mutation testing of the core modules with mutmut, one module at a time.

  pip install -e '.[test,mutation]'
  nice -n 10 python tools/mutation.py rois          # or metrics, tscore, ...
  python tools/mutation.py --list

Each run works on a scratch copy of the checkout (tracked and untracked files,
so uncommitted tests count) under $TMPDIR/bmdjax-mutation/<module>, with a
[tool.mutmut] section naming that module's file and its fast test files (the
ones that exercise it without the session cohort fixtures). mutmut runs, for
each mutant, only the selected tests that reach the mutated function. The
last lines give the score (killed / all mutants) and every surviving mutant
as a diff; <module>.json in the scratch folder keeps the statuses.
docs/mutation.md holds the scores and explains every survivor.
"""

import argparse
import collections
import fnmatch
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]

# module -> (file to mutate, mutant-name globs (None: the whole file), tests).
# Test files missing from a checkout are skipped, so an older commit is
# measured with the tests it had; "--..." entries are pytest options.
MODULES = {
    "dicom_io": ("data_prep/dicom_io.py", None,
                 ["tests/test_dicom_io.py", "tests/test_faults_dicom.py",
                  "tests/test_dicom_luts.py", "tests/test_dicom_third_party.py",
                  "tests/test_dicom_headers.py", "tests/test_dicom_io_mutants.py",
                  # The tests that need the session cohort (and a trained tiny
                  # model) would render it again in every mutant's process.
                  *(f"--deselect=tests/{t}" for t in (
                      "test_faults_dicom.py::test_build_records_every_fault_and_keeps_good_studies",
                      "test_faults_dicom.py::test_predict_reports_every_fault",
                      "test_faults_dicom.py::test_predict_goes_on_after_an_unexpected_error",
                      "test_dicom_luts.py::test_chest_polarity_on_simulated_films",
                      "test_dicom_headers.py::test_spacing_estimated_from_landmarks_matches_the_cohort",
                      "test_dicom_headers.py::test_process_study_fills_and_reports_the_spacing"))]),
    "rois": ("data_prep/rois.py", None,
             ["tests/test_roi_geometry.py", "tests/test_landmarks.py"]),
    "metrics": ("bmdjax/metrics.py",
                # The screening core (AUC, sensitivity/specificity, relative
                # thresholds, RMSE). mutmut skips decorated functions, so the
                # thresholds in vertebra_metrics are checked by hand-made mutants
                # (docs/mutation.md); r, fit, Bland-Altman, bootstrap and CLI are
                # left out to fit a run on 2 cores.
                [f"bmdjax.metrics.x_{f}__mutmut_*" for f in (
                    "rmse", "average_ranks", "roc_auc", "sens_spec", "lowest_fraction")],
                ["tests/test_metrics.py", "tests/test_metric_boundaries.py",
                 "tests/test_metrics_edges.py"]),
    "tscore": ("bmdjax/tscore.py", None,
               ["tests/test_tscore.py", "tests/test_metric_boundaries.py",
                "tests/test_tscore_values.py"]),
    # The young-adult table's reader (moved out of tscore so data prep can
    # stratify with it); reached through tscore.load_reference in these tests.
    "reference": ("data_prep/reference.py", None,
                  ["tests/test_tscore.py", "tests/test_tscore_values.py",
                   "tests/test_metric_boundaries.py", "tests/test_splits.py"]),
    "augment": ("bmdjax/augment.py", None,
                ["tests/test_augment.py", "tests/test_landmarks.py"]),
    "loss": ("bmdjax/tasks.py", ["bmdjax.tasks.x_masked_mse*", "bmdjax.tasks.x_bmd_loss_fn*"],
             ["tests/test_loss_semantics.py",
              "tests/test_mixed_precision.py::test_bf16_compute_keeps_float32_state_and_loss"]),
    "split": ("data_prep/labels.py", ["data_prep.labels.x_assign_splits*"],
              ["tests/test_build.py::test_patient_level_split_keeps_each_patient_in_one_split",
               "tests/test_build.py::test_given_split_column_wins_and_conflicts_are_refused",
               "tests/test_split.py::test_split_sizes_follow_the_fractions_in_patients_not_studies",
               "tests/test_split.py::test_given_splits_are_kept_and_the_rest_dealt_by_patient",
               "tests/test_split.py::test_fractions_are_relative_and_the_default_seed_is_0",
               "tests/test_splits.py"]),
}
SOURCE_PATHS = ["bmdjax", "data_prep", "configs"]


def _copy_checkout(dest: pathlib.Path):
  """Tracked and untracked (not ignored) files, as they are on disk."""
  files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                         check=True, capture_output=True, text=True).stdout.split("\n")
  for name in filter(None, files):
    src = REPO / name
    if src.is_file():
      (dest / name).parent.mkdir(parents=True, exist_ok=True)
      shutil.copy2(src, dest / name)


def _config(path, tests) -> str:
  q = lambda xs: "[" + ", ".join(json.dumps(x) for x in xs) + "]"
  return ("\n[tool.mutmut]\n"
          f"source_paths = {q(SOURCE_PATHS)}\n"
          # Tests read docs/faults.md (the refusals it promises).
          'also_copy = ["docs"]\n'
          f"only_mutate = {q([path])}\n"
          f"pytest_add_cli_args_test_selection = {q(tests)}\n"
          'pytest_add_cli_args = ["-p", "no:cacheprovider", "-x", "-q"]\n'
          # JAX starts threads: fork workers from a server that has imported
          # the test modules (jax included) but run nothing.
          'process_isolation = "forkserver"\n'
          'forkserver_warmup = "collect"\n'
          # Generous: the machine is shared; a real endless loop still shows.
          "timeout_constant = 30.0\n"
          "use_git_change_detection = false\n")


_SHOW = """import sys
from mutmut.__main__ import find_mutant, get_diff_for_mutant, status_by_exit_code
for name in sys.argv[1:]:
  m = find_mutant(name)
  print(f"# {name}: {status_by_exit_code[m.exit_code_by_key[name]]}")
  print(get_diff_for_mutant(name, path=m.path), flush=True)
"""


def run(module: str, work_root: pathlib.Path, max_children: int, only=None) -> dict:
  path, globs, tests = MODULES[module]
  globs = only or globs
  work = work_root / module
  shutil.rmtree(work, ignore_errors=True)
  work.mkdir(parents=True)
  _copy_checkout(work)
  tests = [t for t in tests if t.startswith("--") or (work / t.split("::")[0]).exists()]
  with open(work / "pyproject.toml", "a") as f:
    f.write(_config(path, tests))
  print(f"{module}: mutating {path} with {tests}", flush=True)
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  subprocess.run([sys.executable, "-m", "mutmut", "run", f"--max-children={max_children}",
                  *(globs or [])], cwd=work, env=env, check=False)
  out = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all=true"], cwd=work,
                       env=env, capture_output=True, text=True).stdout
  status = dict(re.findall(r"^\s+(\S+): (.+)$", out, re.M))
  if globs:
    status = {k: v for k, v in status.items() if any(fnmatch.fnmatchcase(k, g) for g in globs)}
  killed = sum(v == "killed" for v in status.values())
  survivors = sorted(k for k, v in status.items() if v != "killed")
  result = {"module": module, "file": path, "tests": tests, "mutants": len(status),
            "killed": killed, "statuses": dict(collections.Counter(status.values())), "score": killed / max(len(status), 1),
            "not_killed": {k: status[k] for k in survivors}}
  (work_root / f"{module}.json").write_text(json.dumps(result, indent=1))
  # One process for all diffs (`mutmut show` per mutant costs a start each).
  subprocess.run([sys.executable, "-c", _SHOW, *survivors], cwd=work, env=env, check=False)
  print(f"{module}: {killed}/{len(status)} killed = {100 * result['score']:.1f}%; "
        f"not killed: {result['statuses']}", flush=True)
  return result


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("modules", nargs="*", help=f"any of {', '.join(MODULES)}")
  parser.add_argument("--list", action="store_true", help="list the modules and exit")
  parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "bmdjax-mutation"),
                      help="scratch folder (one copy of the checkout per module)")
  parser.add_argument("--max_children", type=int, default=2, help="parallel mutants")
  parser.add_argument("--only", default=None,
                      help="file of mutant names (e.g. the survivors of an earlier run's "
                           "<module>.json): run just those")
  args = parser.parse_args()
  if args.list or not args.modules:
    for name, (path, globs, tests) in MODULES.items():
      print(f"{name:9s} {path} {globs or ''} <- {' '.join(tests)}")
    return
  unknown = set(args.modules) - set(MODULES)
  if unknown:
    parser.error(f"unknown module(s) {sorted(unknown)}; known: {', '.join(MODULES)}")
  only = None
  if args.only:
    data = json.loads(pathlib.Path(args.only).read_text())
    only = sorted(data["not_killed"]) if isinstance(data, dict) else data
  for module in args.modules:
    run(module, pathlib.Path(args.work), args.max_children, only)


if __name__ == "__main__":
  main()
