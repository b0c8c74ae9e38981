"""Shared test configuration: tiny widths and small crops, so CPU tests are fast."""

from configs import common


def tiny_config(data_dir, model="attmulroi", target="L1", num_epochs=2, lr=1e-3,
                batch_size=4):
  config = common.get_config(model, f"target={target},width=0.0625")
  config.data.dir = str(data_dir)
  config.data.grid = 2
  if model in ("mulpat", "attmulpat"):
    config.model.num_inputs = 4
  config.model.transformer.update(depth=1, dim=32, heads=2, head_dim=16, mlp_dim=32)
  config.model.regressor_hidden = 16
  config.optim.update(name="adam", lr=lr, weight_decay=0.0, schedule="cosine",
                      warmup_epochs=1.0)
  config.batch_size = batch_size
  config.num_epochs = num_epochs
  config.input.read_threads = 1
  config.log_every_steps = 1
  config.checkpoint_every_steps = 3
  return config
