"""Fine-tuning from another run (`config.init_from`) and pre-filling the
annotation queue with a trained detector (`--landmark_workdir`)."""

import copy
import os

import jax
import numpy as np
import pytest

from bmdjax import detector, inference, training, warm_start
from bmdjax import runs
from bmdjax.annotation import sources


def _leaves(tree):
  return [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]


def test_init_from_starts_training_from_the_other_runs_best_params(tiny_detector, tmp_path):
  config, workdir, _ = tiny_detector
  _, fresh, rest = inference.init_model_state(config)
  source, source_rest, _ = runs.restore_params(str(workdir), fresh, rest, "best")
  tuned = copy.deepcopy(config)
  tuned.init_from = str(workdir)
  tuned.seed = 1  # another random init, which init_from must replace
  _, other_init, _ = inference.init_model_state(tuned)
  training.train_and_evaluate(tuned, str(tmp_path / "ft"), stop_after_steps=1)
  after, _, step = runs.restore_params(str(tmp_path / "ft"), fresh, rest, "latest")
  assert step == 1
  lr = config.optim.lr
  # One Adam step moves every parameter by at most the learning rate.
  from_source = max(np.abs(a - s).max() for a, s in zip(_leaves(after), _leaves(source)))
  from_init = max(np.abs(a - s).max() for a, s in zip(_leaves(after), _leaves(other_init)))
  assert from_source <= lr * (1 + 1e-6)
  assert from_init > 5 * lr
  # BatchNorm statistics come along (the first step's batch moves them 10%).
  restored_params, restored_rest, _ = warm_start.restore_from(str(workdir), fresh, rest)
  for a, b in zip(_leaves(restored_params), _leaves(source)):
    np.testing.assert_array_equal(a, b)
  stats = [(a, b) for a, b, c in zip(_leaves(restored_rest), _leaves(source_rest), _leaves(rest))
           if not np.array_equal(b, c)]
  assert stats  # the trained run has statistics that differ from a fresh model's
  for a, b in stats:
    np.testing.assert_array_equal(a, b)


def test_init_from_a_different_model_names_the_parameters_that_differ(tiny_detector):
  config, workdir, _ = tiny_detector
  wider = copy.deepcopy(config)
  wider.model.width = 6
  _, params, _ = inference.init_model_state(wider)
  with pytest.raises(ValueError, match=r"parameter\(s\) differ: .*\(4,\) in init_from"):
    warm_start.restore_from(str(workdir), params, {})


def test_init_from_a_folder_without_a_run_says_so(tmp_path):
  with pytest.raises(FileNotFoundError, match="run.json not found"):
    warm_start.restore_from(str(tmp_path), {}, {})


def test_the_detector_prefills_the_queue_least_confident_first(tiny_detector, cohort_dir,
                                                                tmp_path):
  _, workdir, _ = tiny_detector
  dicom = str(cohort_dir / "dicom")
  out = str(tmp_path / "annotations.csv")
  session = sources.make_session(dicom, out, landmark_workdir=str(workdir))
  cache = str(tmp_path / "annotations_detected.csv")
  assert os.path.exists(cache)
  names = sorted(session.studies)
  # Reference: the detector called directly, as data prep and screening call it.
  found = detector.LandmarkDetector.from_workdir(str(workdir)).detect_files(
      [os.path.join(dicom, n) for n in names])
  for name, f in zip(names, found):
    s = session.studies[name]
    np.testing.assert_allclose(np.array(s.landmarks), f["landmarks"], atol=0.006)  # CSV: 2 dp
    np.testing.assert_allclose(s.confidence, f["confidence"], atol=6e-5)
  order = [n for n in session.order() if not session.studies[n].flags]
  mins = [session.studies[n].min_confidence for n in order]
  assert mins == sorted(mins)
  flagged = [n for n in session.order() if session.studies[n].flags]
  assert session.order()[:len(flagged)] == flagged
  # A restart reads the cache instead of detecting again.
  mtime = os.path.getmtime(cache)
  again = sources.make_session(dicom, out, landmark_workdir=str(workdir))
  assert os.path.getmtime(cache) == mtime and set(again.studies) == set(names)
