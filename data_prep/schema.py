"""The label schema every part of the project shares: vertebrae, splits and the
sex encoding of the prepared records (one home for each)."""

VERTEBRAE = ("L1", "L2", "L3", "L4")
SPLITS = ("train", "validation", "test")
# Sex as stored in the prepared records (int) and back (SEX_NAMES[code]).
SEXES = {"F": 0, "M": 1}
SEX_NAMES = tuple(sorted(SEXES, key=SEXES.get))
# WHO: osteoporosis at a T-score of -2.5 or lower (bmdjax.tscore; splits are
# stratified by it).
OSTEOPOROSIS_T = -2.5
