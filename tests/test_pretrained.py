"""Loading torchvision-layout weights, checked against float64 numpy (and torch).

The state dicts are generated here from torchvision's key names and OIHW shapes
(written out independently of bmdjax.models), and the reference forward passes
are written from torchvision's definitions, not from our modules.
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bmdjax import pretrained
from bmdjax.models import backbones
from tests.test_backbones import abstract_backbone, run

VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
         512, 512, 512, "M")
RESNETS = {"resnet18": (False, (2, 2, 2, 2)), "resnet34": (False, (3, 4, 6, 3)),
           "resnet50": (True, (3, 4, 6, 3)), "resnet101": (True, (3, 4, 23, 3))}
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


# --- torchvision-layout state dicts ------------------------------------------

def _bn(sd, name, c, rng):
  sd[f"{name}.weight"] = 1 + 0.1 * rng.normal(size=c)
  sd[f"{name}.bias"] = 0.1 * rng.normal(size=c)
  sd[f"{name}.running_mean"] = 0.1 * rng.normal(size=c)
  sd[f"{name}.running_var"] = rng.uniform(0.5, 1.5, c)
  sd[f"{name}.num_batches_tracked"] = np.array(7, np.int64)


def _conv(sd, name, cout, cin, k, rng, bias=False):
  sd[f"{name}.weight"] = rng.normal(0, np.sqrt(2 / (cin * k * k)), (cout, cin, k, k))
  if bias:
    sd[f"{name}.bias"] = 0.1 * rng.normal(size=cout)


def vgg_state_dict(layout, rng):
  sd, i, cin = {}, 0, 3
  for v in layout:
    if v == "M":
      i += 1
    else:
      _conv(sd, f"features.{i}", v, cin, 3, rng, bias=True)
      cin, i = v, i + 2
  sd["classifier.6.weight"] = rng.normal(size=(10, 4096))  # ignored
  return {k: v.astype(np.float32) for k, v in sd.items()}


def resnet_state_dict(arch, rng, last_gamma=1.0):
  bottleneck, blocks = RESNETS[arch]
  sd = {}
  _conv(sd, "conv1", 64, 3, 7, rng)
  _bn(sd, "bn1", 64, rng)
  cin = 64
  for i, n in enumerate(blocks):
    planes = 64 * 2**i
    for j in range(n):
      p = f"layer{i + 1}.{j}."
      if bottleneck:
        spec = [(planes, cin, 1), (planes, planes, 3), (4 * planes, planes, 1)]
      else:
        spec = [(planes, cin, 3), (planes, planes, 3)]
      for c, (co, ci, k) in enumerate(spec, 1):
        _conv(sd, f"{p}conv{c}", co, ci, k, rng)
        _bn(sd, f"{p}bn{c}", co, rng)
      sd[f"{p}bn{len(spec)}.weight"] *= last_gamma  # tames residual growth
      cout = spec[-1][0]
      if j == 0 and (i > 0 or cin != cout):
        _conv(sd, f"{p}downsample.0", cout, cin, 1, rng)
        _bn(sd, f"{p}downsample.1", cout, rng)
      cin = cout
  sd["fc.weight"], sd["fc.bias"] = rng.normal(size=(10, cin)), np.zeros(10)
  return {k: v.astype(np.float32) if v.dtype == np.float64 else v
          for k, v in sd.items()}


# --- float64 numpy reference of torchvision's forward ------------------------

def conv_ref(x, w, stride, pad, b=None):
  """x [N, H, W, C], w [O, I, kh, kw] (torch), zero padding, via im2col."""
  x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  k = w.shape[-1]
  cols = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))
  cols = cols[:, ::stride, ::stride]  # [N, Ho, Wo, C, kh, kw]
  y = np.tensordot(cols, w.astype(np.float64), axes=([3, 4, 5], [1, 2, 3]))
  return y if b is None else y + b


def maxpool_ref(x, k, stride, pad=0):
  x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=-np.inf)
  win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))
  return win[:, ::stride, ::stride].max(axis=(-2, -1))


def bn_ref(x, sd, name):
  g, b, m, v = (sd[f"{name}.{s}"].astype(np.float64)
                for s in ("weight", "bias", "running_mean", "running_var"))
  return (x - m) / np.sqrt(v + 1e-5) * g + b


def rgb_ref(grey):
  return (np.repeat(grey[..., None].astype(np.float64), 3, -1) - MEAN) / STD


def vgg_ref(sd, layout, grey):
  x, i = rgb_ref(grey), 0
  for v in layout:
    if v == "M":
      x, i = maxpool_ref(x, 2, 2), i + 1
    else:
      w, b = sd[f"features.{i}.weight"], sd[f"features.{i}.bias"]
      x, i = np.maximum(conv_ref(x, w, 1, 1, b), 0), i + 2
  return x.mean(axis=(1, 2))


def resnet_ref(sd, arch, grey):
  bottleneck, blocks = RESNETS[arch]
  relu = lambda t: np.maximum(t, 0)
  x = relu(bn_ref(conv_ref(rgb_ref(grey), sd["conv1.weight"], 2, 3), sd, "bn1"))
  x = maxpool_ref(x, 3, 2, 1)
  for i, n in enumerate(blocks):
    for j in range(n):
      p, stride = f"layer{i + 1}.{j}.", 2 if i > 0 and j == 0 else 1
      count = 3 if bottleneck else 2
      strided = 2 if bottleneck else 1  # torchvision v1.5: stride on the 3x3
      y = x
      for c in range(1, count + 1):
        w = sd[f"{p}conv{c}.weight"]
        y = bn_ref(conv_ref(y, w, stride if c == strided else 1, w.shape[-1] // 2),
                   sd, f"{p}bn{c}")
        y = relu(y) if c < count else y
      if f"{p}downsample.0.weight" in sd:
        x = bn_ref(conv_ref(x, sd[f"{p}downsample.0.weight"], stride, 0), sd,
                   f"{p}downsample.1")
      x = relu(x + y)
  return x.mean(axis=(1, 2))


def rel_err(a, b):
  return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def loaded(name, sd, tmp_path, width=1.0):
  path = tmp_path / f"{name}.npz"
  np.savez(path, **sd)
  model = abstract_backbone(name, width)  # every variable comes from the file
  pretrained.load_backbone(model, path)
  return model


# --- tests -------------------------------------------------------------------

@pytest.fixture(scope="module")
def grey():
  return np.random.default_rng(1).uniform(0, 1, (2, 32, 32)).astype(np.float32)


@pytest.fixture(scope="module")
def vgg16_sd():
  return vgg_state_dict(VGG16, np.random.default_rng(0))


@pytest.fixture(scope="module")
def resnet50_sd():
  return resnet_state_dict("resnet50", np.random.default_rng(0), last_gamma=0.3)


def test_vgg16_matches_numpy(vgg16_sd, grey, tmp_path):
  model = loaded("vgg16", vgg16_sd, tmp_path)
  with jax.default_matmul_precision("highest"):
    out = run(model, jnp.asarray(grey))[0]
  assert rel_err(out, vgg_ref(vgg16_sd, VGG16, grey)) < 1e-5


def test_resnet50_matches_numpy(resnet50_sd, grey, tmp_path):
  model = loaded("resnet50", resnet50_sd, tmp_path)
  with jax.default_matmul_precision("highest"):
    out, state = run(model, jnp.asarray(grey))
  assert rel_err(out, resnet_ref(resnet50_sd, "resnet50", grey)) < 1e-5
  np.testing.assert_array_equal(  # running statistics landed in BatchStat
      state["layers"][1][0]["downsample"][1]["var"][...],
      resnet50_sd["layer2.0.downsample.1.running_var"])


@pytest.mark.parametrize("arch", ["vgg19", "resnet18"])  # 13/34/101: same code
def test_every_torchvision_layout_loads(arch, tmp_path):
  rng = np.random.default_rng(0)
  if arch.startswith("vgg"):
    layout = backbones.VGG_LAYOUTS[arch]  # the cfgs are checked by the counts
    sd = vgg_state_dict(layout, rng)
  else:
    sd = resnet_state_dict(arch, rng)
  model = loaded(arch, sd, tmp_path)
  used = {k for k in sd if not k.startswith(("fc.", "classifier."))
          and not k.endswith("num_batches_tracked")}
  leaves = jax.tree.leaves(nnx.state(model))
  assert all(isinstance(x, jax.Array) for x in leaves)  # none left abstract
  assert len(leaves) == len(used)


def test_torch_forward_agrees(vgg16_sd, resnet50_sd, grey, tmp_path):
  """Cross-check of the references themselves against PyTorch's own ops."""
  torch = pytest.importorskip("torch")
  F = torch.nn.functional
  t = {k: torch.from_numpy(np.asarray(v, np.float64))
       for k, v in {**vgg16_sd, **resnet50_sd}.items()}
  x = torch.from_numpy(rgb_ref(grey)).permute(0, 3, 1, 2)

  h, i = x, 0
  for v in VGG16:
    if v == "M":
      h, i = F.max_pool2d(h, 2, 2), i + 1
    else:
      h = F.relu(F.conv2d(h, t[f"features.{i}.weight"], t[f"features.{i}.bias"],
                          padding=1))
      i += 2
  np.testing.assert_allclose(h.mean((2, 3)).numpy(),
                             vgg_ref(vgg16_sd, VGG16, grey), rtol=1e-9)

  def bn(h, n):
    return F.batch_norm(h, t[f"{n}.running_mean"], t[f"{n}.running_var"],
                        t[f"{n}.weight"], t[f"{n}.bias"], False, 0.1, 1e-5)

  h = F.max_pool2d(F.relu(bn(F.conv2d(x, t["conv1.weight"], stride=2, padding=3),
                             "bn1")), 3, 2, 1)
  for i, n in enumerate(RESNETS["resnet50"][1]):
    for j in range(n):
      p, s = f"layer{i + 1}.{j}.", 2 if i > 0 and j == 0 else 1
      y = F.relu(bn(F.conv2d(h, t[p + "conv1.weight"]), p + "bn1"))
      y = F.relu(bn(F.conv2d(y, t[p + "conv2.weight"], stride=s, padding=1),
                    p + "bn2"))
      y = bn(F.conv2d(y, t[p + "conv3.weight"]), p + "bn3")
      if p + "downsample.0.weight" in t:
        h = bn(F.conv2d(h, t[p + "downsample.0.weight"], stride=s),
               p + "downsample.1")
      h = F.relu(h + y)
  np.testing.assert_allclose(h.mean((2, 3)).numpy(),
                             resnet_ref(resnet50_sd, "resnet50", grey), rtol=1e-9)


def tiny_resnet_sd(rng):
  """A torchvision-layout dict fitting resnet18 at width 0.125."""
  model = abstract_backbone("resnet18", 0.125)
  sd = {}
  for name, module in model.torch_modules():
    if isinstance(module, nnx.Conv):
      kh, kw, ci, co = module.kernel.shape
      _conv(sd, name, co, ci, kh, rng)
    else:
      _bn(sd, name, module.scale.shape[0], rng)
  return {k: v.astype(np.float32) if v.dtype == np.float64 else v
          for k, v in sd.items()}


def write_safetensors(path, sd):
  """Minimal writer of the documented format (the package is optional)."""
  try:
    from safetensors.numpy import save_file
    return save_file(sd, str(path))
  except ImportError:
    pass
  names = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64"}
  header, blobs, offset = {}, [], 0
  for k, v in sd.items():
    raw = np.ascontiguousarray(v).astype(v.dtype.newbyteorder("<")).tobytes()
    header[k] = {"dtype": names[v.dtype], "shape": list(v.shape),
                 "data_offsets": [offset, offset + len(raw)]}
    blobs.append(raw)
    offset += len(raw)
  text = json.dumps(header).encode()
  path.write_bytes(len(text).to_bytes(8, "little") + text + b"".join(blobs))


def check_loaded(model, sd):
  np.testing.assert_array_equal(model.conv1.kernel[...],
                                sd["conv1.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(model.layers[1][0].downsample[1].mean[...],
                                sd["layer2.0.downsample.1.running_mean"])


def test_safetensors(tmp_path):
  sd = tiny_resnet_sd(np.random.default_rng(0))
  path = tmp_path / "w.safetensors"
  write_safetensors(path, sd)
  model = abstract_backbone("resnet18", 0.125)
  pretrained.load_backbone(model, path)
  check_loaded(model, sd)


def test_pth_and_converter(tmp_path):
  torch = pytest.importorskip("torch")
  sd = tiny_resnet_sd(np.random.default_rng(0))
  torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, tmp_path / "w.pth")
  model = abstract_backbone("resnet18", 0.125)
  pretrained.load_backbone(model, tmp_path / "w.pth")
  check_loaded(model, sd)
  assert pretrained.convert(tmp_path / "w.pth", tmp_path / "w.npz") == len(sd)
  model = abstract_backbone("resnet18", 0.125)
  pretrained.load_backbone(model, tmp_path / "w.npz")
  check_loaded(model, sd)


def test_missing_key_names_file_and_key(tmp_path):
  sd = tiny_resnet_sd(np.random.default_rng(0))
  del sd["layer3.1.bn2.running_var"]
  np.savez(tmp_path / "w.npz", **sd)
  with pytest.raises(ValueError, match=r"w\.npz.*missing keys: "
                     r"layer3\.1\.bn2\.running_var"):
    pretrained.load_backbone(abstract_backbone("resnet18", 0.125),
                             tmp_path / "w.npz")


def test_wrong_shape_names_key_and_shapes(tmp_path):
  sd = tiny_resnet_sd(np.random.default_rng(0))
  np.savez(tmp_path / "w.npz", **sd)
  model = abstract_backbone("resnet18", 0.25)  # twice as wide as the file
  with pytest.raises(ValueError, match=r"w\.npz.*wrong shapes: conv1\.weight "
                     r"\(8, 3, 7, 7\) \(model needs \(16, 3, 7, 7\)\)"):
    pretrained.load_backbone(model, tmp_path / "w.npz")
  # Nothing was written: the model is still abstract.
  assert isinstance(model.bn1.scale.get_value(), jax.ShapeDtypeStruct)


def test_pth_without_torch_says_so(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "torch", None)
  (tmp_path / "w.pth").write_bytes(b"not read")
  with pytest.raises(ImportError, match=r"w\.pth needs PyTorch"):
    pretrained.read_state_dict(tmp_path / "w.pth")


def test_unknown_format_and_missing_file(tmp_path):
  (tmp_path / "w.h5").write_bytes(b"")
  with pytest.raises(ValueError, match=r"w\.h5: unknown weights format"):
    pretrained.read_state_dict(tmp_path / "w.h5")
  with pytest.raises(FileNotFoundError, match="nope.npz"):
    pretrained.read_state_dict(tmp_path / "nope.npz")


def test_convert_weights_command(tmp_path):
  """`bmdjax convert-weights` writes the .npz the config then loads; a missing
  input is a one-line usage error."""
  import subprocess  # pylint: disable=import-outside-toplevel
  sd = tiny_resnet_sd(np.random.default_rng(1))
  np.savez(tmp_path / "in.npz", **sd)
  command = lambda *a: subprocess.run(  # noqa: E731
      [sys.executable, "-m", "bmdjax.commands", "convert-weights", *a],
      capture_output=True, text=True, timeout=120)
  out = command(f"--out={tmp_path / 'out.npz'}", str(tmp_path / "in.npz"))
  assert out.returncode == 0, out.stderr
  assert f"wrote {len(sd)} tensors" in out.stdout
  model = abstract_backbone("resnet18", 0.125)
  pretrained.load_backbone(model, tmp_path / "out.npz")
  check_loaded(model, sd)
  missing = command(f"--out={tmp_path / 'x.npz'}", str(tmp_path / "nope.pth"))
  assert missing.returncode == 2 and "nope.pth: no such file" in missing.stderr
  assert "Traceback" not in missing.stderr
