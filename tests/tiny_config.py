"""`--config=tests/tiny_config.py:DATA_DIR`: the tests' tiny run as a config
file, so tests can drive the real `python -m bmdjax.train` command line."""

from tests import helpers


def get_config(arg):
  return helpers.tiny_config(arg, num_epochs=2)
