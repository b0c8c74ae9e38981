"""baseline: see configs/common.py for the fields and arguments."""

from configs import common


def get_config(arg=None):
  return common.get_config("baseline", arg)
