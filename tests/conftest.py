"""Session fixtures: one tiny synthetic cohort, prepared once for all tests."""

import os

# Four CPU devices for the sharding tests; must be set before jax is imported.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
# Many tests compile the same tiny programs; a per-user cache cuts repeats.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    os.path.expanduser("~"), ".cache", "bmdjax-tests-jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

from absl import flags  # noqa: E402
import pytest  # noqa: E402

# grain's worker processes read absl flags; tests run without app.run.
flags.FLAGS.mark_as_parsed()

TINY_SIZE = 32


@pytest.fixture(scope="session")
def cohort_dir(tmp_path_factory):
  from data_prep import synthesize
  out = tmp_path_factory.mktemp("cohort")
  synthesize.generate(str(out), patients=40, seed=7, spacing_range=(1.2, 1.4),
                      workers=2, ceiling_samples=20_000, progress=False)
  return out


@pytest.fixture(scope="session")
def prepared_dir(cohort_dir, tmp_path_factory):
  from data_prep import build
  out = tmp_path_factory.mktemp("prepared")
  build.build(str(cohort_dir / "dicom"), str(cohort_dir / "labels.csv"),
              str(cohort_dir / "landmarks.csv"), str(out / "data"), size=TINY_SIZE,
              grids=(2,), workers=2)
  return out / "data"


@pytest.fixture(scope="session")
def tiny_run(prepared_dir, tmp_path_factory):
  """A 2-epoch tiny AttMulRoi run: (config, workdir, train_and_evaluate output)."""
  from bmdjax import training
  from tests import helpers
  config = helpers.tiny_config(prepared_dir, num_epochs=2)
  workdir = tmp_path_factory.mktemp("tiny_run")
  return config, workdir, training.train_and_evaluate(config, str(workdir))


@pytest.fixture(scope="session")
def landmark_prepared(cohort_dir, tmp_path_factory):
  """The session cohort as a 64x64 landmark dataset. Its CSV has two bad rows
  that must be reported, not learnt: one with left and right swapped, one
  naming a file that does not exist."""
  import pandas as pd
  from data_prep import build_landmarks, landmark_checks
  out = tmp_path_factory.mktemp("landmarks")
  marks = pd.read_csv(cohort_dir / "landmarks.csv")
  for r, l in landmark_checks.MIRROR_PAIRS:
    marks.loc[0, [f"x{r}", f"x{l}"]] = marks.loc[0, [f"x{l}", f"x{r}"]].to_numpy()
  marks = pd.concat([marks, marks.iloc[[1]].assign(image="missing.dcm")])
  marks.to_csv(out / "landmarks.csv", index=False)
  build_landmarks.build_dataset(str(cohort_dir / "dicom"), str(out / "landmarks.csv"),
                                str(out / "data"), size=64,
                                labels=str(cohort_dir / "labels.csv"),
                                fractions=(0.6, 0.2, 0.2), workers=1)
  return out / "data"


@pytest.fixture(scope="session")
def tiny_detector(landmark_prepared, tmp_path_factory):
  """A tiny landmark detector trained 4 epochs through the shared train loop:
  (config, workdir, train_and_evaluate output)."""
  from bmdjax import training
  from tests import helpers
  config = helpers.tiny_landmark_config(landmark_prepared)
  workdir = tmp_path_factory.mktemp("tiny_detector")
  return config, workdir, training.train_and_evaluate(config, str(workdir))
