"""``cnnlab bench``: the tutorial's own training loop and ``cnnlab train``'s trainer, side by side.

:mod:`~cnnlab.bench.measure` runs both (:func:`~cnnlab.bench.measure.bench`), :mod:`~cnnlab.bench.reference`
is the tutorial's loop, :mod:`~cnnlab.bench.probes` the hardware and model yardsticks,
:mod:`~cnnlab.bench.data` the synthetic set, :mod:`~cnnlab.bench.report` the text report and
:mod:`~cnnlab.bench.cli` the command.
"""
