"""The model card of an evaluated run (Mitchell et al. 2019), in the report.

Intended use, the data the model saw, metrics overall and by stratum,
interval coverage, the screening operating point and limitations, all read
from metrics.json so the card cannot disagree with the tables.
"""

from __future__ import annotations

import json
import os

INTENDED_USE = (
    'Research use only, not for diagnosis. Opportunistic screening research: '
    'estimating lumbar (L1-L4) BMD from a frontal chest radiograph of an adult, to '
    'study which patients a DXA referral would find. A prediction is never a DXA '
    'measurement; the WHO category shown is the category the model predicts for '
    'the L1-L4 T-score, with an interval, and any clinical decision needs DXA.')
OUT_OF_SCOPE = (
    'Children and adolescents (T-scores do not apply), lateral or CT images (refused), '
    'patients with spinal hardware, populations and scanners unlike the training data, '
    'follow-up of BMD change (the interval is wider than most yearly changes).')


def data_info(data_dir: str | None) -> dict:
  """Split counts from prep.json and, for a data_prep.synthesize cohort, its
  cohort.json summary (which marks the data as synthetic)."""
  out = {}
  prep = os.path.join(data_dir or '', 'prep.json')
  if data_dir and os.path.isfile(prep):
    with open(prep, encoding='utf-8') as f:
      p = json.load(f)
    out['counts'] = {k: p['counts'].get(k) for k in ('train', 'validation', 'test',
                                                      'skipped', 'flagged')}
    out['crop_size'] = p.get('size')
    labels = (p.get('inputs') or {}).get('labels')
    cohort = os.path.join(os.path.dirname(labels), 'cohort.json') if labels else ''
    if cohort and os.path.isfile(cohort):
      with open(cohort, encoding='utf-8') as f:
        c = json.load(f)
      out['synthetic'] = True
      out['cohort'] = {'generator': c.get('generator'), 'settings': c.get('settings'),
                       'ceiling_r': c.get('ceiling_r')}
  return out


def card(result: dict, info: dict) -> dict:
  """The card's content as a dict (stored in metrics.json)."""
  cols = result['meta']['columns']
  overall = {c: {k: result[c].get(k) for k in ('n', 'r', 'rmse', 'auc')} for c in cols}
  strata = {name: {c: {k: s.get(c, {}).get(k) for k in ('n', 'r', 'rmse', 'auc')}
                   for c in cols} for name, s in result.get('strata', {}).items()}
  clin = result.get('clinical', {}).get('columns', {})
  synthetic = (info.get('data') or {}).get('synthetic', False)
  limitations = [
      'Intervals are split-conformal: valid on average over studies like the '
      'validation split, not conditionally for every patient; same width for every study.',
      'L1-L4 weights vertebrae equally (no vertebral areas on a chest radiograph).',
      'The screening threshold was chosen on a validation split of '
      f'{result.get("clinical", {}).get("n_validation", "?")} studies; its test '
      'sensitivity has a wide interval.',
  ]
  limitations = list(info.get('cautions', [])) + limitations
  if synthetic:
    limitations.insert(0, 'Trained and evaluated on SYNTHETIC radiographs '
                       '(data_prep.synthesize): the numbers describe the pipeline, not '
                       'performance on real patients. Retrain and re-evaluate on local data.')
  return dict(model=info.get('model'), intended_use=INTENDED_USE,
              out_of_scope=OUT_OF_SCOPE, data=info.get('data'),
              metrics=overall, strata=strata,
              coverage={c: e['coverage'] for c, e in clin.items()},
              screening={c: e['screening'] for c, e in clin.items()},
              limitations=limitations)


def _f(x, d=3):
  return '—' if x is None else f'{x:.{d}f}'


def render(result: dict) -> str:
  """model_card.md (also the last section of tables.md)."""
  c = result['model_card']
  lines = ['# Model card', '', f'**Model**: {c["model"] or result["meta"]["title"]}', '',
           f'**Intended use**: {c["intended_use"]}', '',
           f'**Out of scope**: {c["out_of_scope"]}', '']
  data = c.get('data') or {}
  if data.get('counts'):
    n = data['counts']
    lines += [f'**Data**: {n.get("train")} training, {n.get("validation")} validation '
              f'(intervals, recalibration, screening threshold), {n.get("test")} test '
              f'studies; {n.get("skipped")} skipped and {n.get("flagged")} flagged at '
              'preparation.' + (' Synthetic cohort (data_prep.synthesize), settings: '
                                f'{json.dumps((data.get("cohort") or {}).get("settings"))}.'
                                if data.get('synthetic') else ''), '']
  lines += [f'**Evaluated on**: {result["meta"]["n_rows"]} studies of '
            f'{result["meta"]["n_patients"]} patients ({result["meta"]["title"]}).', '',
            '| Column | n | R | RMSE g/cm² | AUC | 90% interval coverage | width g/cm² |',
            '|---|---|---|---|---|---|---|']
  for col, m in c['metrics'].items():
    cov = c['coverage'].get(col, {})
    lines.append(f'| {col} | {m["n"]} | {_f(m["r"])} | {_f(m["rmse"])} | {_f(m["auc"])} | '
                 f'{_f(cov.get("coverage_bmd"))} | {_f(cov.get("width_bmd"))} |')
  lines += ['', 'By sex × age stratum (R / AUC):', '',
            '| Stratum | ' + ' | '.join(c['metrics']) + ' |',
            '|---|' + '---|' * len(c['metrics'])]
  for name, s in c['strata'].items():
    lines.append(f'| {name} | ' + ' | '.join(
        f'{_f(s[col]["r"], 2)} / {_f(s[col]["auc"], 2)} (n={s[col]["n"]})'
        for col in c['metrics']) + ' |')
  lines += ['', '**Screening operating point** (threshold fixed on validation):', '']
  for col, s in c['screening'].items():
    t = s.get('test') or {}
    lines.append(f'- {col}: refer when predicted T ≤ {_f(s["threshold_t"], 2)}; test '
                 f'sensitivity {_f(t.get("sensitivity"))}, specificity '
                 f'{_f(t.get("specificity"))} ({s["n_osteoporosis"]} osteoporosis of '
                 f'{s["n"]})')
  lines += ['', '**Limitations**:', ''] + [f'- {x}' for x in c['limitations']] + ['']
  return '\n'.join(lines)
