"""Evaluators chosen by config.evals (big_vision's pattern)."""

import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import pytest

from bmdjax import evaluators, inference, input_pipeline, tasks
from tests import helpers


def test_validation_uses_the_evaluator_the_config_names(prepared_dir):
  @evaluators.register("count_records")
  class CountRecords:  # pylint: disable=unused-variable
    score_key = "records"

    def __init__(self, config, graphdef, source, sharding, **_):
      self.source = source

    def run(self, params, rest):
      return {"records": len(self.source)}

    scalars = staticmethod(lambda val: val)
    describe = staticmethod(str)

  config = helpers.tiny_config(prepared_dir)
  config.evals.validation.type = "count_records"
  task = tasks.get(config)
  graphdef, params, rest = inference.init_model_state(config)
  source = input_pipeline.open_split(config.data.dir, "validation")
  mesh = jax.make_mesh((jax.device_count(),), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))
  validate = task.make_validation(graphdef, source, NamedSharding(mesh, P("data")))
  assert validate(params, rest) == {"records": len(source)}
  assert task.score_key == "records"

  config.evals.validation.type = "no_such_evaluator"
  with pytest.raises(ValueError, match="no_such_evaluator.*bmd_regression"):
    tasks.get(config).make_validation(graphdef, source, NamedSharding(mesh, P("data")))
