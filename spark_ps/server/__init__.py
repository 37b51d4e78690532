"""The sidecar process: ``python -m spark_ps.server.sidecar`` and everything it runs.

The executor plugin starts it; it serves tables (:mod:`.table`) and clocks
(:mod:`.clock`) over TCP (:mod:`.tcp`), applying the update rules of
:mod:`.optim`, within the limits of :mod:`.settings` (enforced by :mod:`.tcp`,
:mod:`.guard` and :mod:`.shard`). It never imports pyspark, :mod:`spark_ps.client`,
:mod:`spark_ps.spark` or :mod:`spark_ps.ml` (``tests/test_layout.py``).
"""
