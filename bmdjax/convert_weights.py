r"""Rewrites torchvision-layout backbone weights as .npz, once, where torch is
installed; training then needs no torch.

  bmdjax convert-weights --out=vgg16.npz vgg16-397923af.pth

The input is a .pth/.pt (needs PyTorch), .safetensors or .npz state dict with
torchvision's key names (VGG `features.N.*`, ResNet `conv1.*`, `layerS.B.*`).
Point a config at the result with --config.model.backbone_init=vgg16.npz.
"""

from __future__ import annotations

import os

from absl import flags

from bmdjax import cli, pretrained

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string("out", None, "The .npz to write.")


def main(argv):
  if len(argv) != 2:
    cli.exit_usage("give one input file: bmdjax convert-weights --out=OUT.npz IN.pth")
  if not FLAGS.out:
    cli.exit_usage("--out is required (the .npz to write)")
  if not os.path.isfile(argv[1]):
    cli.exit_usage(f"{argv[1]}: no such file")
  n = pretrained.convert(argv[1], FLAGS.out)
  print(f"wrote {n} tensors to {FLAGS.out}")


if __name__ == "__main__":
  cli.run(main, define_flags, doc=__doc__)
