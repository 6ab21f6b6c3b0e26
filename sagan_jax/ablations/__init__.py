"""The paper's ablations as sweeps over training seeds: Table 1 (where attention helps, and
whether parameters alone explain it) and Fig. 3 (spectral norm on G and TTUR stabilise
training), run with ``python -m sagan_jax.ablations --sweep=table1|fig3`` (__main__.py).

A sweep is a list of variants, each a set of config overrides on a base config, trained with
``--seeds`` seeds each (config.seed = first_seed, first_seed + 1, …: parameters, noise and data
order) as ``python -m sagan_jax.main`` runs, evaluated ``--eval_points`` times along training.

- variants.py: the two sweeps' variants, titles, default baselines and plots.
- launcher.py: the jobs (variant × seed) planned, launched, resumed, pinned to cores, stopped.
- records.py: where each run trains and is recorded; its record read, written, reused from
  another sweep or refused when it trained another config.
- tables.py: results.md/.csv and paired.csv over seeds, and the plots.
- stats.py: t-intervals over seeds and paired differences.

Nothing else in the package imports this one; it imports no training loop (it launches runs).
"""
