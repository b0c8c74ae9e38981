r"""The evaluation report of any predictions table: metrics.json, tables.md, PNGs.

  python -m bmdjax.write_report --predictions=predictions.csv --out=report/ \
      [--reference=ref.csv] [--baseline_predictions=age_sex.csv] [--bootstrap=1000] \
      [--age_bands=40,50,60,70,90] [--title=TITLE]

Reproduces the paper's clinical evaluation: Table I (R, RMSE, AUC per
vertebra and Avg), Table II (sensitivity/specificity at T -2.5 and -1, plus
the relative "last 10%/20%" rules of Fig. 6), Table V (sex x age strata),
Tables VI/VII (ground-truth agreement between vertebrae: what a neighbouring
vertebra would achieve as a "prediction"), Figs 4-6, and optionally a
comparison with an age+sex-only model, which any image model must beat to be
worth an X-ray. Writes metrics.json, tables.md and the PNGs into --out and
prints tables.md.

predictions.csv: patient_id,image,sex,age,true_L1..true_L4,pred_L1..pred_L4
(BMD in g/cm2; only vertebrae with predictions are reported). docs/metrics.md
documents every key of metrics.json.
"""

from __future__ import annotations

from absl import flags

from bmdjax import cli, metrics, report, tscore

FLAGS = flags.FLAGS


def define_flags():
  """Defined on demand, so importing this module defines none."""
  flags.DEFINE_string('predictions', None,
                      'predictions.csv: patient_id,image,sex,age,'
                      'true_L1..true_L4,pred_L1..pred_L4 (BMD in g/cm2).')
  flags.DEFINE_string('out', None, 'Output folder for metrics.json, '
                      'tables.md and the PNG figures.')
  cli.define_reference_flag()
  flags.DEFINE_string('baseline_predictions', None, 'Optional predictions '
                      'CSV of an age+sex-only model, same schema and rows.')
  flags.DEFINE_integer('bootstrap', 1000, 'Patient-level bootstrap resamples '
                       'for 95% intervals (0: none).')
  flags.DEFINE_integer('seed', 0, 'Bootstrap seed.')
  flags.DEFINE_string('age_bands', '40,50,60,70,90', 'Age band edges for the '
                      'sex x age strata (Table V): 40,50,60 -> 40-50, 50-60.')
  flags.DEFINE_string('title', '', 'Title of tables.md.')
  flags.mark_flags_as_required(['predictions', 'out'])


def main(argv):
  if len(argv) > 1:
    raise SystemExit(f'unexpected arguments: {argv[1:]}')
  try:
    preds = report.read_predictions(FLAGS.predictions)
    baseline = (report.read_predictions(FLAGS.baseline_predictions)
                if FLAGS.baseline_predictions else None)
    ref = tscore.load_reference(FLAGS.reference) if FLAGS.reference else None
    bands = metrics.parse_age_bands(FLAGS.age_bands)
  except (OSError, ValueError) as e:  # bad input: a message, not a traceback
    raise SystemExit(f'error: {e}') from e
  result = report.write_report(
      preds, FLAGS.out, reference=ref, age_bands=bands, bootstrap=FLAGS.bootstrap,
      seed=FLAGS.seed, baseline_predictions=baseline, title=FLAGS.title)
  print(report.render_tables(result))


if __name__ == '__main__':
  cli.run(main, define_flags, doc=__doc__)
