"""On-device augmentation: random affine warps of crops (BMD models); for the
landmark detector, affine warps of whole images with their landmarks and a
randomised film look (objects, collimation, CR/DX processing, exposure,
noise, grid lines), plus the fixed operations its input normalisation and
test-time augmentation share with it (Gaussian blur, equalisation, exact
point mapping).

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


def random_affine(rng, x: jax.Array, *, scale: float, rotate_deg: float,
                  translate: float, flip: bool) -> jax.Array:
  """x: [..., H, W] float; returns the same shape, edges reflected."""
  *lead, h, w = x.shape
  flat = x.reshape((-1, h, w))
  params = _sample_affine(rng, flat.shape[0], scale=scale, rotate_deg=rotate_deg,
                          translate=translate, flip=flip, h=h, w=w, dtype=x.dtype)
  out = jax.vmap(lambda img, *p: _warp(img, *p, mode="reflect"))(flat, *params)
  return out.reshape(x.shape)


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


# ----------------------------------------------------------------- landmark detector
# Whole letterboxed radiographs and their landmarks: general affine warps (with
# aspect change, as a patient's build or a cropped field of view gives) and a
# randomised "film look": what differs between the synthetic films and real
# ones from many vendors after dicom_io's percentile normalisation.


def affine_matrices(scale, aspect, theta) -> jax.Array:
  """[n, 2, 2] maps (x, y) about the image centre: rotation by theta after
  scaling x by scale*e^aspect and y by scale*e^-aspect."""
  c, s = jnp.cos(theta), jnp.sin(theta)
  sx, sy = scale * jnp.exp(aspect), scale * jnp.exp(-aspect)
  return jnp.stack([jnp.stack([c * sx, -s * sy], -1),
                    jnp.stack([s * sx, c * sy], -1)], -2)


def _centre(h, w):
  return jnp.array([(w - 1) / 2, (h - 1) / 2], jnp.float32)


def forward_points(points, a, shift, h, w):
  """Where warp_affine(., a, shift) takes points [..., K, 2] (x, y) of one image."""
  c = _centre(h, w)
  return jnp.einsum("ij,...kj->...ki", a, points - c) + c + shift


def inverse_points(points, a, shift, h, w):
  """The exact inverse of forward_points: points found in a warped image -> the
  original image (test-time augmentation maps its detections back with it)."""
  c = _centre(h, w)
  return jnp.einsum("ij,...kj->...ki", jnp.linalg.inv(a), points - c - shift) + c


def warp_affine(img, a, shift):
  """Resamples one [H, W] image so that a source point p lands on
  forward_points(p); zeros outside (the letterbox padding)."""
  h, w = img.shape
  yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                        indexing="ij")
  out = jnp.stack([xx, yy], -1).reshape(-1, 2)
  src = inverse_points(out, a, shift, h, w)
  coords = [src[:, 1].reshape(h, w), src[:, 0].reshape(h, w)]
  return jax.scipy.ndimage.map_coordinates(img, coords, order=1, mode="constant")


def random_geometry(rng, x: jax.Array, points: jax.Array, *, scale, rotate_deg,
                    translate, aspect=0.0, zoom_in=0.0):
  """Whole images x [B, H, W] and their points [B, K, 2] (x, y pixels), warped
  alike: log-uniform scale in [1 - scale, 1 + scale + zoom_in] (zooming in
  crops the field of view), rotation, aspect change e^U(+-aspect), shift of
  U(+-translate) of the side. No flip (it would swap the patient's sides) and
  zeros outside, as the letterbox padding. Returns (images, points)."""
  b, h, w = x.shape
  ks, ka, kr, kt = jax.random.split(rng, 4)
  s = jnp.exp(jax.random.uniform(ks, (b,), minval=jnp.log(1.0 - scale),
                                 maxval=jnp.log(1.0 + scale + zoom_in)))
  asp = jax.random.uniform(ka, (b,), minval=-aspect, maxval=aspect)
  theta = jnp.deg2rad(jax.random.uniform(kr, (b,), minval=-rotate_deg, maxval=rotate_deg))
  shift = jax.random.uniform(kt, (b, 2), minval=-translate, maxval=translate) * jnp.array(
      [w, h], jnp.float32)
  a = affine_matrices(s, asp, theta)
  images = jax.vmap(warp_affine)(x, a, shift)
  moved = jax.vmap(lambda p, m, t: forward_points(p, m, t, h, w))(points, a, shift)
  return images, moved


def gaussian_blur(x: jax.Array, sigma, radius: int) -> jax.Array:
  """Gaussian blur of x [B, H, W] with a per-image sd `sigma` [B] (or a
  scalar) in pixels. Edges are reflected over `radius` (static) pixels, then
  the blur is a product in the Fourier domain (one cost for any sd; a
  grouped convolution with wide kernels is slow on CPUs)."""
  b, h, w = x.shape
  r = int(min(radius, h - 1, w - 1))
  xp = jnp.pad(x, ((0, 0), (r, r), (r, r)), mode="reflect")
  sd = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), (b,))[:, None, None]
  fy = jnp.fft.fftfreq(h + 2 * r)[:, None]
  fx = jnp.fft.rfftfreq(w + 2 * r)[None, :]
  transfer = jnp.exp(-2.0 * (jnp.pi * sd) ** 2 * (fy ** 2 + fx ** 2))
  out = jnp.fft.irfft2(jnp.fft.rfft2(xp) * transfer, s=xp.shape[1:])
  return out[:, r:r + h, r:r + w].astype(x.dtype)


HIST_BINS = 256


def _cdf(x: jax.Array):
  """Per image of x [B, H, W] in [0, 1]: the bin of each pixel [B, H*W] and
  the empirical CDF at each bin's upper edge [B, HIST_BINS] (a histogram:
  scatter-adds are cheap where sorts are not)."""
  b = x.shape[0]
  idx = jnp.clip((x.reshape(b, -1) * HIST_BINS).astype(jnp.int32), 0, HIST_BINS - 1)
  counts = jax.vmap(lambda i: jnp.zeros(HIST_BINS, jnp.float32).at[i].add(1.0))(idx)
  return idx, jnp.cumsum(counts, -1) / idx.shape[1]


def equalize(x: jax.Array) -> jax.Array:
  """Histogram equalisation of each image of x [B, H, W] in [0, 1]: every
  pixel's empirical CDF (256 levels). Unchanged by any increasing remapping
  of the intensities that keeps the levels apart (window, gamma, vendor LUT:
  most of what processing does globally)."""
  idx, cdf = _cdf(jnp.clip(x, 0.0, 1.0))
  return jnp.take_along_axis(cdf, idx, axis=1).reshape(x.shape)


def rescale_percentiles(x: jax.Array, lo=0.005, hi=0.995) -> jax.Array:
  """Per image, the [lo, hi] quantiles (of x clipped to [0, 1]; histogram
  resolution) -> [0, 1], clipped: dicom_io's normalisation, redone after
  processing."""
  _, cdf = _cdf(jnp.clip(x, 0.0, 1.0))
  edges = jnp.arange(HIST_BINS, dtype=jnp.float32) / HIST_BINS
  q_lo = edges[jnp.argmax(cdf >= lo, axis=1)]
  q_hi = edges[jnp.argmax(cdf >= hi, axis=1)] + 1.0 / HIST_BINS
  return jnp.clip((x - q_lo[:, None, None]) / (q_hi - q_lo)[:, None, None], 0.0, 1.0)


def _uniform(k, b, lo, hi):
  return jax.random.uniform(k, (b,), minval=lo, maxval=hi)


def _gate(k, b, p):
  """Per-image on/off [B] (float) with probability p."""
  return jax.random.bernoulli(k, p, (b,)).astype(jnp.float32)


def _segment_distance(px, py, p0, p1):
  """Distance of pixels (px, py) [H, W] from the segment p0 -> p1 (x, y)."""
  d = p1 - p0
  t = jnp.clip(((px - p0[0]) * d[0] + (py - p0[1]) * d[1]) / jnp.maximum(d @ d, 1e-6), 0, 1)
  return jnp.hypot(px - p0[0] - t * d[0], py - p0[1] - t * d[1])


def random_objects(rng, x: jax.Array, *, p: float, markers: int = 3, wires: int = 3,
                   discs: int = 4) -> jax.Array:
  """What lies on real films, drawn radio-opaque (bright): lead side markers
  and pacemaker-sized blocks (rectangles), ECG leads, lines and tubes (thin
  curves) and ECG electrodes (discs), each present with probability p."""
  b, h, w = x.shape
  side = float(max(h, w))
  yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                        indexing="ij")
  keys = iter(jax.random.split(rng, 4 * (markers + wires + discs)))

  def paint(x, mask, value, on):  # mask [B, H, W] in [0, 1]
    m = mask * on[:, None, None]
    return x * (1 - m) + value[:, None, None] * m

  for _ in range(markers):  # rectangles of 0.5-8% of the side
    c = jax.random.uniform(next(keys), (b, 2)) * jnp.array([w, h], jnp.float32)
    half = jax.random.uniform(next(keys), (b, 2), minval=0.0025, maxval=0.04) * side
    mask = ((jnp.abs(xx - c[:, 0, None, None]) <= half[:, 0, None, None]) &
            (jnp.abs(yy - c[:, 1, None, None]) <= half[:, 1, None, None]))
    x = paint(x, mask.astype(jnp.float32), _uniform(next(keys), b, 0.7, 1.0),
              _gate(next(keys), b, p))
  for _ in range(wires):  # quadratic Bezier curves across the film, 12 segments
    ctrl = jax.random.uniform(next(keys), (b, 3, 2), minval=-0.1, maxval=1.1) * jnp.array(
        [w, h], jnp.float32)
    t = jnp.linspace(0, 1, 13)[:, None]
    curve = jax.vmap(lambda c: (1 - t) ** 2 * c[0] + 2 * t * (1 - t) * c[1] + t ** 2 * c[2])(ctrl)
    dist = jax.vmap(lambda cv: jnp.min(jnp.stack([
        _segment_distance(xx, yy, cv[i], cv[i + 1]) for i in range(12)]), 0))(curve)
    thick = _uniform(next(keys), b, 0.003, 0.012) * side
    mask = jax.nn.sigmoid((thick[:, None, None] - dist) * 2.0)
    x = paint(x, mask, _uniform(next(keys), b, 0.4, 1.0), _gate(next(keys), b, p))
  for _ in range(discs):
    c = jax.random.uniform(next(keys), (b, 2)) * jnp.array([w, h], jnp.float32)
    r = _uniform(next(keys), b, 0.006, 0.025) * side
    d = jnp.hypot(xx - c[:, 0, None, None], yy - c[:, 1, None, None])
    x = paint(x, jax.nn.sigmoid((r[:, None, None] - d) * 2.0),
              _uniform(next(keys), b, 0.6, 1.0), _gate(next(keys), b, p))
  return x


def random_collimation(rng, x: jax.Array, *, p: float, width: float) -> jax.Array:
  """Collimated borders: each side, with probability p, a band of up to
  `width` of the side set to a flat value (mostly bright: unexposed film;
  sometimes dark: shuttered by the processing)."""
  b, h, w = x.shape
  kw, kv, kd, kg = jax.random.split(rng, 4)
  band = jax.random.uniform(kw, (b, 4), maxval=width) * jax.random.bernoulli(
      kg, p, (b, 4))
  value = jnp.where(jax.random.bernoulli(kd, 0.7, (b,)),
                    _uniform(kv, b, 0.7, 1.0), _uniform(kv, b, 0.0, 0.2))
  yy = jnp.arange(h, dtype=jnp.float32)[None, :, None] / h
  xx = jnp.arange(w, dtype=jnp.float32)[None, None, :] / w
  out = ((xx < band[:, 0, None, None]) | (xx > 1 - band[:, 1, None, None]) |
         (yy < band[:, 2, None, None]) | (yy > 1 - band[:, 3, None, None]))
  return jnp.where(out, value[:, None, None], x)


def random_monotone_lut(rng, x: jax.Array, *, strength: float, knots: int = 8) -> jax.Array:
  """A random increasing intensity curve per image (window/level, film
  characteristic curves, vendor LUTs): piecewise linear through `knots`
  increments of log-normal size (sd `strength`)."""
  b = x.shape[0]
  inc = jnp.exp(strength * jax.random.normal(rng, (b, knots)))
  ys = jnp.concatenate([jnp.zeros((b, 1)), jnp.cumsum(inc, -1)], -1)
  ys = ys / ys[:, -1:]
  xs = jnp.linspace(0.0, 1.0, knots + 1)
  return jax.vmap(lambda img, y: jnp.interp(img, xs, y))(x, ys)


def random_processing(rng, x: jax.Array, *, p: float, radius: int) -> jax.Array:
  """CR/DX image processing, each step with probability p: a vendor LUT,
  histogram equalisation blended in, unsharp masking (amount < 0 blurs) at a
  fine and a coarse scale, dynamic range compression (low frequencies
  attenuated), a plain blur; then dicom_io's percentile rescaling."""
  b, h, w = x.shape
  side = float(max(h, w))
  k = iter(jax.random.split(rng, 16))
  x = jnp.where(_gate(next(k), b, p)[:, None, None] > 0,
                random_monotone_lut(next(k), x, strength=0.6), x)
  a = _uniform(next(k), b, 0.0, 1.0) * _gate(next(k), b, p)
  x = (1 - a[:, None, None]) * x + a[:, None, None] * equalize(x)
  for lo, hi in ((0.004, 0.03), (0.03, 0.12)):  # fine and coarse unsharp masks
    sigma = _uniform(next(k), b, lo, hi) * side
    amount = _uniform(next(k), b, -0.6, 2.5) * _gate(next(k), b, p)
    x = x + amount[:, None, None] * (x - gaussian_blur(x, sigma, radius))
  sigma = _uniform(next(k), b, 0.08, 0.25) * side
  c = _uniform(next(k), b, 0.0, 0.8) * _gate(next(k), b, p)
  low = gaussian_blur(x, sigma, radius)
  x = x - c[:, None, None] * (low - low.mean(axis=(1, 2), keepdims=True))
  blur = _uniform(next(k), b, 0.3, 1.2) * _gate(next(k), b, p / 2)
  x = jnp.where(blur[:, None, None] > 0, gaussian_blur(x, blur, 3), x)
  return rescale_percentiles(x)


def random_grid_lines(rng, x: jax.Array, *, p: float, amplitude: float) -> jax.Array:
  """Anti-scatter grid lines (and their moire): a fine sinusoid along rows or
  columns, 0.15-0.5 cycles per pixel."""
  b, h, w = x.shape
  kf, ka, kp, kd, kg = jax.random.split(rng, 5)
  freq = _uniform(kf, b, 0.15, 0.5)[:, None, None]
  amp = _uniform(ka, b, 0.0, amplitude)[:, None, None] * _gate(kg, b, p)[:, None, None]
  phase = _uniform(kp, b, 0.0, 2 * jnp.pi)[:, None, None]
  yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                        indexing="ij")
  coord = jnp.where(jax.random.bernoulli(kd, 0.5, (b, 1, 1)), xx, yy)
  return x + amp * jnp.sin(2 * jnp.pi * freq * coord + phase)


def film_look(rng, x: jax.Array, *, cfg) -> jax.Array:
  """The whole randomised film look of the landmark detector's training, on
  x [B, H, W] in [0, 1] (after the geometric warp): objects on the patient,
  collimation, processing, exposure (gamma, contrast, brightness), quantum and
  structured noise, grid lines. `cfg`: configs/landmarks.py `augment`; a part
  whose probability is 0 is left out."""
  ko, kc, kp, ki, kn, kg = jax.random.split(rng, 6)
  b = x.shape[0]
  if cfg.objects:
    x = random_objects(ko, x, p=cfg.objects)
  if cfg.collimation:
    x = random_collimation(kc, x, p=cfg.collimation, width=cfg.collimation_width)
  if cfg.processing:
    x = random_processing(kp, x, p=cfg.processing, radius=int(round(0.5 * max(x.shape[1:]))))
  x = random_intensity(ki, x, gamma=cfg.gamma, contrast=cfg.contrast,
                       brightness=cfg.brightness, noise=cfg.noise)
  if cfg.noise:  # low-frequency (structured) noise, e.g. plate artefacts
    k1, k2 = jax.random.split(kn)
    coarse = gaussian_blur(jax.random.normal(k1, x.shape), 2.0, 6)
    x = x + coarse * _uniform(k2, b, 0.0, 3.0 * cfg.noise)[:, None, None]
  if cfg.grid_lines:
    x = random_grid_lines(kg, x, p=cfg.grid_lines, amplitude=0.06)
  return jnp.clip(x, 0.0, 1.0)
