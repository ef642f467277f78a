"""Tune and compare: a learning-rate finder, hyperparameter sweeps on Optuna, and a table of runs.

* :mod:`cnnlab.tune.lr_find`: :func:`~cnnlab.tune.lr_find.lr_find` and
  :func:`~cnnlab.tune.lr_find.suggest_lr` (what ``cnnlab train --lr auto`` uses).
* :mod:`cnnlab.tune.sweep`: :func:`~cnnlab.tune.sweep.run_sweep` and :func:`~cnnlab.tune.sweep.show_sweep`.
* :mod:`cnnlab.tune.compare`: :func:`~cnnlab.tune.compare.list_runs` and :func:`~cnnlab.tune.compare.plot_runs`.
* :mod:`cnnlab.tune.cli`: the ``lr-find``, ``sweep`` and ``runs`` sub-commands.

Importing this package loads neither torch nor Optuna; each module loads what it needs.
"""
