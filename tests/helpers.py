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


def tiny_landmark_config(data_dir, num_epochs=4, lr=1e-2, batch_size=4):
  """A detector of a few thousand parameters on 64x64 letterboxes; no
  augmentation, so that a few steps visibly lower the loss."""
  from configs import landmarks  # pylint: disable=import-outside-toplevel
  config = landmarks.get_config("width=4,graph=1")
  config.data.dir = str(data_dir)
  config.model.levels = 2
  config.model.graph_dim = 8
  config.augment.update(rotate_deg=0.0, scale=0.0, translate=0.0, gamma=0.0,
                        contrast=0.0, brightness=0.0, noise=0.0, aspect=0.0, zoom_in=0.0,
                        objects=0.0, collimation=0.0, processing=0.0, grid_lines=0.0)
  config.optim.lr = lr
  config.batch_size = batch_size
  config.num_epochs = num_epochs
  config.input.read_threads = 1
  config.log_every_steps = 1
  config.checkpoint_every_steps = 5
  return config
