"""The patient-level split of a small pilot, stratified by sex and osteoporosis."""

import numpy as np

from bmdjax import tscore
from data_prep import labels
from data_prep.schema import VERTEBRAE


def pilot(seed=0, patients=40, osteoporotic=5, followups=8):
  """A 40-patient hospital pilot: a few osteoporotic patients (T <= -2.5 at
  some vertebra), some patients with a second study."""
  rng = np.random.default_rng(seed)
  ref = dict(tscore.load_reference(None).table)
  pids, sexes, bmd = [], [], []
  for p in range(patients):
    sex = "F" if p % 3 else "M"
    t = rng.uniform(-2.0, 1.0, 4) if p >= osteoporotic else rng.uniform(-3.5, -2.6, 4)
    row = [ref[(sex, v)][0] + t[i] * ref[(sex, v)][1] for i, v in enumerate(VERTEBRAE)]
    for _ in range(2 if p < followups // 2 or p >= patients - followups // 2 else 1):
      pids.append(f"P{p:03d}")
      sexes.append(sex)
      bmd.append(row)
  return np.array(pids, object), np.array(sexes, object), np.array(bmd), ref


def test_stratified_split_gives_every_split_the_rare_cases():
  pids, sex, bmd, ref = pilot()
  strata = labels.split_strata(sex, bmd, ref)
  rare = {p for p, s in zip(pids, strata) if s.endswith("osteoporosis")}
  assert len(rare) == 5
  misses_unstratified = 0
  for seed in range(30):
    split = labels.assign_splits(pids, (0.7, 0.15, 0.15), seed, strata=strata)
    for p in set(pids):  # group-aware: a patient's studies stay together
      assert len(set(split[pids == p])) == 1
    for name in ("train", "validation", "test"):
      kinds = {s for s, sp in zip(strata, split) if sp == name}
      assert any(k.endswith("osteoporosis") for k in kinds), (seed, name, kinds)
      assert {k[0] for k in kinds} == {"F", "M"}, (seed, name, kinds)
    n_test = len({p for p, sp in zip(pids, split) if sp == "test"})
    assert 5 <= n_test <= 7, n_test  # ~15% of 40 patients
    plain = labels.assign_splits(pids, (0.7, 0.15, 0.15), seed)
    misses_unstratified += not any(
        s.endswith("osteoporosis") for s, sp in zip(strata, plain) if sp == "test")
  # Without strata the same pilot often has no osteoporosis case to test on.
  assert misses_unstratified > 0


def test_given_splits_win_and_strata_follow_the_lowest_t_score():
  ref = dict(tscore.load_reference(None).table)
  m, sd = ref[("F", "L2")]
  bmd = [[np.nan, m - 2.5 * sd, m, m], [m, m, m, m]]
  assert list(labels.split_strata(["F", "F"], bmd, ref)) == ["F/osteoporosis", "F/other"]
  split = labels.assign_splits(["a", "b", "c"], seed=0, given=["test", "", ""],
                               strata=["F/other", "M/other", "M/other"])
  assert split[0] == "test"
  assert list(labels.stratum_counts(3, (0.7, 0.15, 0.15))) == [1, 1, 1]
  assert list(labels.stratum_counts(20, (0.7, 0.15, 0.15))) == [14, 3, 3]
