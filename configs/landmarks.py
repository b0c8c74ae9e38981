r"""The 16-landmark detector (bmdjax/models/landmarks.py), big_vision style.

  bmdjax prepare-landmarks --dicom_dir=D --landmarks=landmarks.csv \
      --out=LM_PREP --size=256
  python -m bmdjax.train --config=configs/landmarks.py --workdir=LM_RUN \
      --config.data.dir=LM_PREP
  python -m bmdjax.train --config=configs/landmarks.py:demo ...   # CPU-sized

Arguments: `demo` (128x128 letterbox, see _demo), `width=N` (channels of the
first U-Net level), `graph=0` to switch the graph refinement off, `plain`
for the old detector (raw input, mild augmentation, no test-time
augmentation: the ablation of what makes it transfer).
"""

import ml_collections

from configs import common


def get_config(arg=None):
  a = common.parse_arg(arg, demo=False, width=32, graph=2, plain=False)
  c = ml_collections.ConfigDict()
  c.task = "landmarks"  # bmdjax/tasks.py
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.dir = ""  # output of data_prep.build_landmarks (its --size sets the input)
  c.data.train_split = "train"
  c.data.eval_split = "validation"

  c.model = ml_collections.ConfigDict()
  c.model.name = "landmarks"
  c.model.width = a.width       # channels at stride 2; doubled per level up to 8x
  c.model.levels = 4            # downsamplings after the stride-2 stem
  c.model.graph_layers = a.graph  # graph convolutions of the refinement (0: none)
  c.model.graph_dim = 64
  c.model.heatmap_sigma = 1.5   # target heatmap sd in heatmap cells (2 px)
  # Fixed input normalisation (bmdjax/models/landmarks.py): histogram
  # equalisation + local contrast normalisation, so that what vendors'
  # processing changes reaches the network as little as possible.
  c.model.input_norm = "none" if a.plain else "equalize_lcn"
  c.model.dtype = "float32"

  # L1 of the soft-argmax and of the refined points (in heatmap cells), plus
  # the KL divergence of each heatmap from a Gaussian at the true point (keeps
  # one sharp peak, which makes the confidence meaningful).
  c.loss = ml_collections.ConfigDict(
      dict(heatmap_points=1.0, refined_points=1.0, heatmap_kl=1.0))

  c.optim = ml_collections.ConfigDict(
      dict(name="adam", lr=1e-3, momentum=0.0, weight_decay=0.0,
           warmup_epochs=1.0, schedule="cosine", grad_clip=1.0))
  c.batch_size = 16
  c.num_epochs = 60

  # On-device augmentation of the whole letterboxed image, landmarks moved
  # with it (bmdjax/augment.py): what real radiographs vary in beyond what the
  # letterbox removes and beyond what any simulator renders. Geometry: patient
  # rotation, body size and build (aspect), position, a cropped field of view
  # (zoom_in). Film look (`film_look`, each part on a share of the images):
  # objects on the patient (lead markers, ECG leads and electrodes, tubes,
  # pacemakers), collimated borders, CR/DX processing (vendor LUT,
  # equalisation, unsharp masking at two scales, dynamic range compression,
  # blur), exposure (gamma, contrast, brightness), noise, grid lines.
  c.augment = ml_collections.ConfigDict(
      dict(rotate_deg=15.0, scale=0.15, translate=0.08, aspect=0.0, zoom_in=0.0,
           gamma=0.35, contrast=0.25, brightness=0.1, noise=0.03,
           objects=0.0, collimation=0.0, collimation_width=0.12, processing=0.0,
           grid_lines=0.0))
  if not a.plain:
    c.augment.update(rotate_deg=20.0, scale=0.2, translate=0.1, aspect=0.12, zoom_in=0.25,
                     gamma=0.5, contrast=0.3, brightness=0.1, noise=0.04,
                     objects=0.35, collimation=0.3, processing=0.6, grid_lines=0.25)

  # Test-time augmentation (bmdjax/detector.py): the detection is the mean
  # over the identity and these transforms (each mapped back exactly); the
  # spread of the points across them (RMS, input pixels) lowers the
  # confidence by exp(-(spread / spread_px)^2 / 2), so a landmark that moves
  # when the film is zoomed, turned or sharpened is flagged as unsure.
  c.tta = ml_collections.ConfigDict(
      dict(scales=(0.9, 1.1), rotations_deg=(-6.0, 6.0), sharpen=True, spread_px=4.0))
  if a.plain:
    c.tta.update(scales=(), rotations_deg=(), sharpen=False)

  # Plausibility checks of detections (data_prep/landmark_checks.py). A
  # landmark less confident than this is flagged: 0.5 is just below the least
  # confident landmark (0.51, test-time spread included) of the validation
  # split of the seed-1 demo cohort (README, "Landmark detector"); errors
  # concentrate below it.
  c.checks = ml_collections.ConfigDict(dict(min_confidence=0.5))

  c.evals = ml_collections.ConfigDict({"validation": {"type": "landmark_errors"}})

  common.add_loop_settings(c)
  if a.demo:
    _demo(c)
  return c


def _demo(c):
  """CPU-sized: prepared with --size=128, a narrow U-Net, fewer epochs."""
  c.data.dir = "demo_out/landmarks_prepared"
  c.model.width = 12
  c.num_epochs = 15
  c.input.read_threads = 2
  c.log_every_steps = 10
  c.checkpoint_every_steps = 200
