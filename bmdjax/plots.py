"""Figures of the paper's evaluation (Figs 4, 5, 6) as PNG files.

Uses matplotlib's object API (Figure + Agg canvas), never pyplot, so plotting
touches no global state and works headless and from threads. Each function
takes plain arrays, computes what it draws with bmdjax.metrics (so a figure
always agrees with metrics.json) and returns the path it wrote.
"""

import textwrap

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bmdjax import metrics

BMD_UNIT = 'g/cm$^2$'
_COLORS = {'L1': 'tab:blue', 'L2': 'tab:orange', 'L3': 'tab:green',
           'L4': 'tab:red'}
_SEX_COLORS = {'M': 'tab:blue', 'F': 'tab:red'}
_SEX_NAMES = {'M': 'male', 'F': 'female'}
# ROC operating points: (label, marker) keyed by rule name.
_RULES = {
    'osteoporosis': ('pred T $\\leq$ -2.5', 'o'),
    'osteopenia': ('pred T < -1', 's'),
    'last10': ('lowest 10%', '^'),
    'last20': ('lowest 20%', 'D'),
}


def _figure(ncols=1, nrows=1, size=(5.5, 5)):
  fig = Figure(figsize=size, dpi=120)
  FigureCanvasAgg(fig)
  axes = fig.subplots(nrows, ncols, squeeze=False)
  return fig, axes


def _save(fig, path) -> str:
  fig.tight_layout()
  fig.savefig(path, format='png')
  return str(path)


def _finite(*arrays):
  mask = metrics.finite_mask(*arrays)
  return [np.asarray(a, dtype=float).reshape(-1)[mask] for a in arrays]


def _legend(ax, **kw):
  """A legend only when something is labelled (empty data draws nothing)."""
  if ax.get_legend_handles_labels()[0]:
    ax.legend(**kw)


def _fmt(v, digits=3):
  return 'n/a' if v is None else f'{v:.{digits}f}'


def fit_plot(true, pred, path, vertebra: str = 'L1', title: str = '') -> str:
  """Fig. 4 left: predicted vs DXA BMD with the fitted line and identity."""
  x, y = _finite(true, pred)
  fig, axes = _figure()
  ax = axes[0, 0]
  ax.scatter(x, y, s=6, alpha=0.35, color='tab:blue', edgecolors='none',
             label=f'studies (n={len(x)})')
  lo = float(min(x.min(), y.min())) if len(x) else 0.0
  hi = float(max(x.max(), y.max())) if len(x) else 1.0
  grid = np.array([lo, hi])
  ax.plot(grid, grid, ls=':', color='grey', lw=1, label='identity y = x')
  fit = metrics.linear_fit(x, y, vertebra)
  if fit['slope'] is not None:
    ax.plot(grid, fit['slope'] * grid + fit['intercept'], color='tab:red',
            lw=2, label=f'fit y = A x + B\nA = {_fmt(fit["slope"])}, '
            f'B = {_fmt(fit["intercept"])}, R$^2$ = {_fmt(fit["r2"])}')
  ax.set_xlabel(f'DXA BMD {vertebra} ({BMD_UNIT})')
  ax.set_ylabel(f'Predicted BMD {vertebra} ({BMD_UNIT})')
  ax.set_title(title or f'{vertebra}: linear fit of prediction on DXA')
  ax.set_aspect('equal', adjustable='datalim')
  _legend(ax, loc='upper left', fontsize=8)
  ax.grid(alpha=0.3)
  return _save(fig, path)


def bland_altman_plot(true, pred, path, vertebra: str = 'L1',
                      title: str = '') -> str:
  """Fig. 4 right: difference (pred - DXA) against the pair mean."""
  x, y = _finite(true, pred)
  fig, axes = _figure(size=(6.5, 4.5))
  ax = axes[0, 0]
  ax.scatter((x + y) / 2, y - x, s=6, alpha=0.35, color='tab:blue',
             edgecolors='none', label=f'studies (n={len(x)})')
  ba = metrics.bland_altman(x, y, vertebra)
  if ba['ba_mean'] is not None:
    ax.axhline(ba['ba_mean'], color='tab:red', lw=2,
               label=f'mean {ba["ba_mean"]:+.3f} (SD {ba["ba_sd"]:.3f})')
    for key in ('ba_loa_high', 'ba_loa_low'):
      ax.axhline(ba[key], color='tab:red', ls='--', lw=1,
                 label=('mean $\\pm$ 1.96 SD: '
                        f'[{ba["ba_loa_low"]:+.3f}, {ba["ba_loa_high"]:+.3f}]'
                        if key == 'ba_loa_high' else None))
  ax.axhline(0, color='grey', ls=':', lw=1)
  ax.set_xlabel(f'Mean of DXA and predicted BMD {vertebra} ({BMD_UNIT})')
  ax.set_ylabel(f'Predicted - DXA BMD ({BMD_UNIT})')
  ax.set_title(title or f'{vertebra}: Bland-Altman')
  _legend(ax, loc='upper right', fontsize=8)
  ax.grid(alpha=0.3)
  return _save(fig, path)


def _operating_points(true_t, pred_t) -> dict:
  """(FPR, TPR) of each rule in _RULES, for osteoporosis (truth T <= -2.5)."""
  pos = true_t <= metrics.OSTEOPOROSIS_T
  flags = {
      'osteoporosis': pred_t <= metrics.OSTEOPOROSIS_T,
      'osteopenia': pred_t < metrics.OSTEOPENIA_T,
  }
  for name, frac in metrics.RELATIVE_FRACTIONS.items():
    flags[name] = metrics.lowest_fraction(pred_t, frac)
  n_pos, n_neg = pos.sum(), (~pos).sum()
  return {k: ((f & ~pos).sum() / n_neg, (f & pos).sum() / n_pos)
          for k, f in flags.items()}


def roc_plot(t_scores: dict, path, title: str = '') -> str:
  """Fig. 6: osteoporosis ROC per vertebra, with operating points marked.

  t_scores maps vertebra -> (true T, predicted T). Left: whole curve; right:
  the upper-left corner the paper shows, where the rules differ.
  """
  fig, axes = _figure(ncols=2, size=(11, 5))
  corner = [0.4, 0.4]  # zoom: max FPR, min TPR, widened to show every point
  for v, (true_t, pred_t) in t_scores.items():
    tt, pt = _finite(true_t, pred_t)
    curve = metrics.roc_curve(tt <= metrics.OSTEOPOROSIS_T, -pt, v)
    if curve is None:
      continue
    fpr, tpr, _ = curve
    auc = metrics.roc_auc(tt <= metrics.OSTEOPOROSIS_T, -pt, v)
    color = _COLORS.get(v)
    points = _operating_points(tt, pt)
    corner[0] = max(corner[0], *(p[0] + 0.05 for p in points.values()))
    corner[1] = min(corner[1], *(p[1] - 0.05 for p in points.values()))
    for ax in axes[0]:
      ax.plot(fpr, tpr, color=color, lw=1.5,
              label=f'{v} (AUC {auc:.3f})')
      for rule, (fx, ty) in points.items():
        ax.plot(fx, ty, marker=_RULES[rule][1], color=color, ms=7,
                mec='black', ls='none')
  # One legend entry per marker shape, in black, for the rules.
  for rule, (label, marker) in _RULES.items():
    axes[0, 1].plot([], [], marker=marker, color='white', mec='black',
                    ls='none', label=label)
  for ax in axes[0]:
    ax.set_xlabel('False positive rate (1 - specificity)')
    ax.set_ylabel('True positive rate (sensitivity)')
    ax.grid(alpha=0.3)
  axes[0, 0].plot([0, 1], [0, 1], ls=':', color='grey', lw=1)
  axes[0, 0].set_xlim(0, 1)
  axes[0, 0].set_ylim(0, 1.01)
  axes[0, 0].set_title(title or 'Osteoporosis ROC (truth T $\\leq$ -2.5)')
  _legend(axes[0, 0], loc='lower right', fontsize=8)
  axes[0, 1].set_xlim(0, min(1.0, corner[0]))
  axes[0, 1].set_ylim(max(0.0, corner[1]), 1.01)
  axes[0, 1].set_title('Upper-left corner with operating points')
  _legend(axes[0, 1], loc='lower right', fontsize=8)
  return _save(fig, path)


def _age_bins(age, bin_width):
  lo = np.floor(np.nanmin(age) / bin_width) * bin_width
  return lo + bin_width * np.floor((age - lo) / bin_width)


def bmd_vs_age_plot(frame, path, vertebrae=('L1', 'L2', 'L3', 'L4'),
                    bin_width: float = 5, title: str = '') -> str:
  """Fig. 5: mean BMD per age bin by sex, DXA (solid) and predicted (dashed).

  frame: a DataFrame with sex ('M'/'F'), age, true_Lk and pred_Lk columns.
  Bins with fewer than 5 rows are omitted (their means are noise).
  """
  n = len(vertebrae)
  ncols = min(2, n)
  nrows = int(np.ceil(n / ncols))
  fig, axes = _figure(ncols=ncols, nrows=nrows,
                      size=(5.5 * ncols, 4 * nrows))
  age = frame['age'].to_numpy(dtype=float)
  ok_age = np.isfinite(age)
  bins = np.full(len(age), np.nan)
  if ok_age.any():
    bins[ok_age] = _age_bins(age[ok_age], bin_width)
  for i, v in enumerate(vertebrae):
    ax = axes.flat[i]
    for sex in ('M', 'F'):
      for col, ls, what in ((f'true_{v}', '-', 'DXA'),
                            (f'pred_{v}', '--', 'predicted')):
        if col not in frame:
          continue
        vals = frame[col].to_numpy(dtype=float)
        sel = (frame['sex'].to_numpy() == sex) & ok_age & np.isfinite(vals)
        centers, means = _binned_means(bins[sel], vals[sel], bin_width)
        if len(centers):
          ax.plot(centers, means, ls=ls, marker='o', ms=3,
                  color=_SEX_COLORS[sex], label=f'{_SEX_NAMES[sex]}, {what}')
    ax.set_xlabel('Age (years)')
    ax.set_ylabel(f'Mean BMD {v} ({BMD_UNIT})')
    ax.set_title(f'{v}')
    ax.grid(alpha=0.3)
    _legend(ax, fontsize=8)
  for ax in list(axes.flat)[n:]:
    ax.set_visible(False)
  fig.suptitle(title or f'BMD by age and sex ({bin_width:g}-year bins)')
  return _save(fig, path)


def _binned_means(bins, values, bin_width, min_count=5):
  """(bin centres, means) of bins holding at least min_count rows."""
  if len(bins) == 0:
    return np.zeros(0), np.zeros(0)
  uniq, inv, counts = np.unique(bins, return_inverse=True, return_counts=True)
  sums = np.bincount(inv.reshape(-1), weights=values, minlength=len(uniq))
  keep = counts >= min_count
  return uniq[keep] + bin_width / 2, sums[keep] / counts[keep]


def radiograph_overlay(image, landmarks, path, title: str = '', *, true=None,
                       marked=(), roi_boxes: bool = False, notice: str = '') -> str:
  """A radiograph with its landmark graph: screening's view (`roi_boxes`: the
  14 labelled ROI boxes, so a reader can check the model looked where it
  should) and the detector's errors (`true`: true points green, detected red,
  each pair joined by a yellow error line). Landmarks in `marked` (e.g.
  flagged ones) are circled; `notice` is a red banner along the bottom (e.g.
  research use only). The one drawer of landmarks on an image."""
  from data_prep import rois  # pylint: disable=import-outside-toplevel
  image = np.asarray(image)
  pred = np.asarray(landmarks, float)
  h, w = image.shape
  fig = Figure(figsize=(8, 8 * h / w + 0.6), dpi=100)
  FigureCanvasAgg(fig)
  ax = fig.add_axes([0, 0, 1, 1 - 0.6 / (8 * h / w + 0.6)])
  ax.imshow(image, cmap='gray', vmin=0, vmax=1)
  graph = 'tab:red' if true is not None else 'yellow'
  for a, b in rois.LANDMARK_EDGES:
    ax.plot(*zip(pred[a], pred[b]), color=graph, lw=0.8 if true is not None else 1)
  if true is not None:
    true = np.asarray(true, float)
    for a, b in rois.LANDMARK_EDGES:
      ax.plot(*zip(true[a], true[b]), color='tab:green', lw=0.8, alpha=0.7)
    for t, p in zip(true, pred):
      ax.plot([t[0], p[0]], [t[1], p[1]], color='yellow', lw=1)
    ax.scatter(true[:, 0], true[:, 1], s=14, c='tab:green', label='true', zorder=3)
  ax.scatter(pred[:, 0], pred[:, 1], s=14, c='tab:red', zorder=3,
             label='detected' if true is not None else None)
  marked = list(marked)
  if marked:
    ax.scatter(pred[marked, 0], pred[marked, 1], s=160, facecolors='none',
               edgecolors='orange', lw=2, zorder=4)
  if roi_boxes:
    centres, side, angle = rois.roi_boxes(pred)
    for name, centre in zip(rois.ROI_NAMES, centres):
      corners = rois.box_corners(centre, side, angle)
      ax.fill(corners[:, 0], corners[:, 1], fill=False, edgecolor='cyan', lw=1)
      ax.text(*corners[0], name, color='cyan', fontsize=7, va='bottom')
  ax.set_xlim(0, w)
  ax.set_ylim(h, 0)
  ax.axis('off')
  if true is not None:
    ax.legend(loc='lower right', fontsize=7)
  fig.suptitle(textwrap.fill(title, 110), fontsize=9)
  if notice:
    ax.text(0.5, 0.01, notice, transform=ax.transAxes, ha='center', va='bottom',
            color='white', fontsize=13, weight='bold',
            bbox=dict(facecolor='red', alpha=0.8, edgecolor='none'))
  fig.savefig(path, format='png')
  return str(path)


def calibration_plot(cal: dict, path, column: str = 'L1') -> str:
  """Calibration by prediction decile, before and after the validation-fitted
  recalibration: mean DXA against mean prediction per decile, with the
  calibration line (DXA on prediction) and the identity.

  cal: one column of metrics.json's clinical.columns[...]['calibration'].
  """
  fig, axes = _figure(size=(5.5, 5))
  ax = axes[0, 0]
  pts = []
  for when, color, marker in (('before', 'tab:blue', 'o'), ('after', 'tab:red', 's')):
    dec = cal[f'deciles_{when}']
    if not dec:
      continue
    x = np.array([d['pred'] for d in dec])
    y = np.array([d['true'] for d in dec])
    pts += [x, y]
    line = cal[when]
    label = (f'{when} recalibration: slope {_fmt(line["slope"], 2)}, '
             f'CITL {_fmt(line["citl"], 3)}')
    ax.plot(x, y, marker=marker, color=color, ls='-', lw=1, label=label)
  if pts:
    lo, hi = float(min(map(np.min, pts))), float(max(map(np.max, pts)))
    ax.plot([lo, hi], [lo, hi], ls=':', color='grey', lw=1, label='perfect calibration')
  ax.set_xlabel(f'Mean predicted BMD {column} per decile ({BMD_UNIT})')
  ax.set_ylabel(f'Mean DXA BMD {column} ({BMD_UNIT})')
  ax.set_title(f'{column}: calibration by decile of prediction')
  _legend(ax, loc='upper left', fontsize=8)
  ax.grid(alpha=0.3)
  return _save(fig, path)


def landmark_overlay(image, true, pred, path, title: str = '', edges=()) -> str:
  """True (green) against detected (red) landmarks (radiograph_overlay)."""
  del edges  # the landmark graph is rois.LANDMARK_EDGES
  return radiograph_overlay(image, pred, path, title, true=true)
