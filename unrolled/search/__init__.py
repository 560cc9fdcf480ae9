"""Architecture search over the LISTA design space on Optuna (docs/spec.md §8, issue 17).

:mod:`.space` (decisions as Optuna parameters, architectures, the average architecture),
:mod:`.samplers` (random, TPE, regularised evolution, REINFORCE controller), :mod:`.storage`
(journal file or RDB, leases and re-queueing of a killed worker's trial), :mod:`.study`
(settings, one trial, the worker loop, N local workers) and :mod:`.report` (top-k, average
architecture, figures, re-training beside LISTA, LFISTA and Dense-LISTA on the test set).
Needs the ``search`` extra (Optuna).
"""
