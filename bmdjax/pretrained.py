"""Load torchvision-layout backbone weights (e.g. ImageNet VGG16) into our models.

Keys follow torchvision: VGG `features.N.weight/bias`; ResNet `conv1.weight`,
`bn1.*`, `layerS.B.convK.weight`, `layerS.B.bnK.*`, `layerS.B.downsample.{0,1}.*`.
Conv weights are transposed OIHW -> HWIO; BatchNorm running_mean/var go to the
BatchStat variables. Keys the backbone does not use (`classifier.*`, `fc.*`,
`num_batches_tracked`) are ignored. Files: .npz, .safetensors (read here, no
extra package) or .pth/.pt (needs PyTorch).

Convert a PyTorch file once, where torch is installed:
  bmdjax convert-weights --out=vgg16.npz vgg16-397923af.pth
"""

import json
import os

import jax.numpy as jnp
import ml_dtypes
import numpy as np
from absl import logging
from flax import nnx

_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16,
    "BF16": ml_dtypes.bfloat16, "I64": np.int64, "I32": np.int32,
    "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}


def _read_safetensors(path):
  """The safetensors format: u64 header size, JSON header, raw little-endian data."""
  with open(path, "rb") as f:
    size = int.from_bytes(f.read(8), "little")
    header = json.loads(f.read(size))
    data = f.read()
  out = {}
  for key, info in header.items():
    if key == "__metadata__":
      continue
    if info["dtype"] not in _SAFETENSORS_DTYPES:
      raise ValueError(f"{path}: tensor {key!r} has unsupported dtype {info['dtype']}")
    begin, end = info["data_offsets"]
    dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]]).newbyteorder("<")
    out[key] = np.frombuffer(data[begin:end], dtype).reshape(info["shape"])
  return out


def _read_torch(path):
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(
        f"reading {path} needs PyTorch (`pip install torch`); or convert it where "
        "torch is installed: bmdjax convert-weights --out=out.npz in.pth"
    ) from e
  state = torch.load(path, map_location="cpu", weights_only=True)
  if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
    state = state["state_dict"]
  return {k: (v.float() if v.is_floating_point() else v).numpy()
          for k, v in state.items() if isinstance(v, torch.Tensor)}


def read_state_dict(path) -> dict[str, np.ndarray]:
  """Name -> array from a .npz, .safetensors or .pth/.pt file."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"no weights file {path}")
  suffix = os.path.splitext(path)[1].lower()
  if suffix == ".npz":
    with np.load(path) as f:
      return {k: f[k] for k in f.files}
  if suffix == ".safetensors":
    return _read_safetensors(path)
  if suffix in (".pth", ".pt"):
    return _read_torch(path)
  raise ValueError(f"{path}: unknown weights format {suffix!r} "
                   "(expected .npz, .safetensors, .pth or .pt)")


def _targets(module):
  """(torch key suffix, variable, torch -> flax layout) of one layer."""
  if isinstance(module, nnx.Conv):
    yield "weight", module.kernel, lambda w: w.transpose(2, 3, 1, 0)
    if module.bias is not None:
      yield "bias", module.bias, None
  elif isinstance(module, nnx.BatchNorm):
    yield "weight", module.scale, None
    yield "bias", module.bias, None
    yield "running_mean", module.mean, None
    yield "running_var", module.var, None
  else:
    raise TypeError(f"no torchvision mapping for {type(module).__name__}")


def _torch_shape(shape, layout):
  return (shape[3], shape[2], shape[0], shape[1]) if layout else tuple(shape)


def _listing(items, limit=8):
  more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
  return ", ".join(items[:limit]) + more


def load_backbone(model, path, *, prefix: str = "") -> list[str]:
  """Overwrite the backbone of `model` (or `model` itself if it is a backbone)
  with the torchvision-layout weights in `path`; returns the keys used.

  `prefix` is prepended to every torchvision key (e.g. "backbone." for a file
  that holds a whole model). Nothing is changed unless every key is found with
  the right shape; the error then names the file and the offending keys.
  """
  backbone = getattr(model, "backbone", model)
  state = read_state_dict(path)
  updates, missing, misshaped = [], [], []
  for name, module in backbone.torch_modules():
    for suffix, variable, layout in _targets(module):
      key = f"{prefix}{name}.{suffix}"
      if key not in state:
        missing.append(key)
        continue
      value = np.asarray(state[key])
      expected = _torch_shape(variable.shape, layout)
      if value.shape != expected:
        misshaped.append(f"{key} {value.shape} (model needs {expected})")
        continue
      updates.append((key, variable, layout(value) if layout else value))
  if missing or misshaped:
    problems = []
    if missing:
      problems.append(f"missing keys: {_listing(missing)}")
    if misshaped:
      problems.append(f"wrong shapes: {_listing(misshaped)}")
    raise ValueError(
        f"{path} does not fit the {type(backbone).__name__} backbone with "
        f"{backbone.num_features} output features: " + "; ".join(problems) +
        f". The file holds: {_listing(sorted(state), 4)}")
  for _, variable, value in updates:
    variable.set_value(jnp.asarray(value, jnp.float32))
  used = [key for key, _, _ in updates]
  unused = sorted(set(state) - set(used))
  logging.info("loaded %d backbone tensors from %s; ignored %d (%s)", len(used),
               path, len(unused), _listing(unused, 4))
  return used


def convert(src, dst) -> int:
  """Rewrites the state dict in `src` as an .npz at `dst`; returns the tensor count."""
  state = read_state_dict(src)
  np.savez(dst, **state)
  return len(state)
