"""The label schema every part of the project shares: vertebrae, splits and the
sex encoding of the prepared records (one home for each)."""

VERTEBRAE = ("L1", "L2", "L3", "L4")
SPLITS = ("train", "validation", "test")
# Sex as stored in the prepared records (int) and back (SEX_NAMES[code]).
SEXES = {"F": 0, "M": 1}
SEX_NAMES = tuple(sorted(SEXES, key=SEXES.get))
# WHO categories by T-score: osteoporosis at -2.5 or lower, osteopenia at -1 or
# lower (bmdjax.tscore, bmdjax.metrics; splits are stratified by osteoporosis).
OSTEOPOROSIS_T = -2.5
OSTEOPENIA_T = -1.0
