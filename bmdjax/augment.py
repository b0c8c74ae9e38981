"""On-device augmentation: random affine warps (of crops, or of whole images
with their landmarks) and intensity jitter.

Runs inside the jitted training step, so the host only ships uint16 images and
the accelerator does the resampling (one bilinear gather per output pixel).
Each crop of each sample gets its own random transform, as the paper's
per-ROI augmentation.
"""

import jax
import jax.numpy as jnp


def _sample_affine(rng, n, *, scale, rotate_deg, translate, flip, h, w, dtype):
  """Per-image scale, angle (radians), shift [n, 2] (rows, cols) and mirror."""
  k_scale, k_rot, k_shift, k_flip = jax.random.split(rng, 4)
  s = jax.random.uniform(k_scale, (n,), minval=1.0 - scale, maxval=1.0 + scale)
  theta = jnp.deg2rad(jax.random.uniform(k_rot, (n,), minval=-rotate_deg, maxval=rotate_deg))
  shift = jax.random.uniform(k_shift, (n, 2), minval=-translate, maxval=translate)
  shift = shift * jnp.array([h, w], dtype)
  mirror = (jax.random.bernoulli(k_flip, 0.5, (n,)) if flip
            else jnp.zeros((n,), bool))
  return s, theta, shift, mirror


def _warp(img, s, theta, shift, mirror, mode):
  """Resamples one [H, W] image: output pixel -> source pixel undoes the
  translation, rotation, scale and flip (about the image centre)."""
  h, w = img.shape
  yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32) - (h - 1) / 2,
                        jnp.arange(w, dtype=jnp.float32) - (w - 1) / 2, indexing="ij")
  u, v = xx - shift[1], yy - shift[0]
  c, si = jnp.cos(theta), jnp.sin(theta)
  src_x = (c * u + si * v) / s
  src_y = (-si * u + c * v) / s
  src_x = jnp.where(mirror, -src_x, src_x)
  coords = [src_y + (h - 1) / 2, src_x + (w - 1) / 2]
  return jax.scipy.ndimage.map_coordinates(img, coords, order=1, mode=mode)


def _move_points(points, s, theta, shift, mirror, h, w):
  """Where `_warp` takes source points [K, 2] (x, y): its forward map."""
  x = points[:, 0] - (w - 1) / 2
  y = points[:, 1] - (h - 1) / 2
  x = jnp.where(mirror, -x, x)
  c, si = jnp.cos(theta), jnp.sin(theta)
  u = s * (c * x - si * y)
  v = s * (si * x + c * y)
  return jnp.stack([u + shift[1] + (w - 1) / 2, v + shift[0] + (h - 1) / 2], axis=-1)


def random_affine(rng, x: jax.Array, *, scale: float, rotate_deg: float,
                  translate: float, flip: bool) -> jax.Array:
  """x: [..., H, W] float; returns the same shape, edges reflected."""
  *lead, h, w = x.shape
  flat = x.reshape((-1, h, w))
  params = _sample_affine(rng, flat.shape[0], scale=scale, rotate_deg=rotate_deg,
                          translate=translate, flip=flip, h=h, w=w, dtype=x.dtype)
  out = jax.vmap(lambda img, *p: _warp(img, *p, mode="reflect"))(flat, *params)
  return out.reshape(x.shape)


def random_affine_points(rng, x: jax.Array, points: jax.Array, *, scale: float,
                         rotate_deg: float, translate: float):
  """Whole images x [B, H, W] and their points [B, K, 2] (x, y pixels), warped
  alike. No flip (it would swap the patient's sides) and zeros outside, as the
  letterbox padding: reflecting a radiograph would add mirrored bones."""
  b, h, w = x.shape
  params = _sample_affine(rng, b, scale=scale, rotate_deg=rotate_deg,
                          translate=translate, flip=False, h=h, w=w, dtype=x.dtype)
  images = jax.vmap(lambda img, *p: _warp(img, *p, mode="constant"))(x, *params)
  moved = jax.vmap(lambda pts, *p: _move_points(pts, *p, h, w))(points, *params)
  return images, moved


def random_intensity(rng, x: jax.Array, *, gamma: float, contrast: float,
                     brightness: float, noise: float) -> jax.Array:
  """Per image: gamma exp(U(+-gamma)), contrast about mid-grey 1 + U(+-contrast),
  brightness U(+-brightness), Gaussian noise of sd U(0, noise); x [B, H, W] in
  [0, 1], clipped back to [0, 1]. What exposure, detector response and
  quantum noise change after dicom_io's percentile normalisation."""
  b = x.shape[0]
  kg, kc, kb, kn, ks = jax.random.split(rng, 5)
  per = lambda k, a: jax.random.uniform(k, (b, 1, 1), minval=-a, maxval=a)
  x = jnp.clip(x, 0.0, 1.0) ** jnp.exp(per(kg, gamma))
  x = (x - 0.5) * (1.0 + per(kc, contrast)) + 0.5 + per(kb, brightness)
  sd = jax.random.uniform(ks, (b, 1, 1), maxval=noise)
  x = x + sd * jax.random.normal(kn, x.shape)
  return jnp.clip(x, 0.0, 1.0)
