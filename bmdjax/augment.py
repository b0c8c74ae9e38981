"""On-device augmentation of crops: scale, rotation, translation, flip.

Runs inside the jitted training step, so the host only ships uint16 crops and
the accelerator does the resampling (one bilinear gather per output pixel).
Each crop of each sample gets its own random transform, as the paper's
per-ROI augmentation.
"""

import jax
import jax.numpy as jnp


def random_affine(rng, x: jax.Array, *, scale: float, rotate_deg: float,
                  translate: float, flip: bool) -> jax.Array:
  """x: [..., H, W] float; returns the same shape, edges reflected."""
  *lead, h, w = x.shape
  flat = x.reshape((-1, h, w))
  n = flat.shape[0]
  k_scale, k_rot, k_shift, k_flip = jax.random.split(rng, 4)
  s = jax.random.uniform(k_scale, (n,), minval=1.0 - scale, maxval=1.0 + scale)
  theta = jnp.deg2rad(jax.random.uniform(k_rot, (n,), minval=-rotate_deg, maxval=rotate_deg))
  shift = jax.random.uniform(k_shift, (n, 2), minval=-translate, maxval=translate)
  shift = shift * jnp.array([h, w], x.dtype)
  mirror = (jax.random.bernoulli(k_flip, 0.5, (n,)) if flip
            else jnp.zeros((n,), bool))

  yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32) - (h - 1) / 2,
                        jnp.arange(w, dtype=jnp.float32) - (w - 1) / 2, indexing="ij")

  def warp(img, s, theta, shift, mirror):
    # Output pixel -> source pixel: undo translation, rotation, scale, flip.
    u, v = xx - shift[1], yy - shift[0]
    c, si = jnp.cos(theta), jnp.sin(theta)
    src_x = (c * u + si * v) / s
    src_y = (-si * u + c * v) / s
    src_x = jnp.where(mirror, -src_x, src_x)
    coords = [src_y + (h - 1) / 2, src_x + (w - 1) / 2]
    return jax.scipy.ndimage.map_coordinates(img, coords, order=1, mode="reflect")

  out = jax.vmap(warp)(flat, s, theta, shift, mirror)
  return out.reshape(x.shape)
