"""Where a model's ``transform`` reads its weights from, and how long that shard table lives (issue 11, item 6).

A fitted model scores from its training table while that table answers as
the saved weights would (zero-initialised tables, see ``fitting.py``); a
loaded model, or one whose table is gone, loads its Delta weights into a new
``serve_*`` table first. Either table is held by a
:class:`~spark_ps.spark.leases.TableLease` that the model, its copies and the
DataFrames its ``transform`` returned share: the table is dropped once none
of them is referenced any more, or at once by ``model.release()``. Before,
both kinds stayed on the shards until the sidecars (training tables) or the
PSContext (serving tables) went away. Without the plugin (a session that
only loads and scores), small models are broadcast instead.

Split out of ``base.py`` to keep that module under 500 lines.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from spark_ps.errors import PluginNotRunningError, UnavailableError
from spark_ps.ml import weights as weight_store
from spark_ps.spark.context import PSContext

log = logging.getLogger("spark_ps.ml")

#: Above this many non-zero rows, scoring without shards refuses to broadcast.
BROADCAST_MAX_ROWS = 1_000_000


def live_table(model, spark) -> tuple[Any, str]:
    """A client and the name of a shard table holding ``model``'s weights; loads Delta into the shards if needed.

    Examples
    --------
    >>> from spark_ps.ml.classification import LogisticRegression
    >>> model = LogisticRegression().fit(spark.createDataFrame([([1], 1.0), ([2], 0.0)] * 50,
    ...                                                        "features array<bigint>, label double"))
    >>> client, table = live_table(model, spark)
    >>> table == model._lease.name, bool(client.pull(table, [1])[0, 0] > 0)
    (True, True)
    >>> model.release(); _, again = live_table(model, spark); again.startswith("serve_")   # reloaded from Delta
    True

    A shard lost since the last look (the plugin restarted it, empty) is
    followed once (:meth:`PSContext.refresh`); a table that lost its rows on
    that shard is missing there, so the model reloads its Delta weights.
    """
    ps = PSContext.get(spark)
    try:
        return _live_table(model, spark, ps)
    except ConnectionError as exc:
        log.warning("a shard did not answer (%s); following the registry to its replacement", exc)
        ps.refresh()
        return _live_table(model, spark, ps)


def _live_table(model, spark, ps: PSContext) -> tuple[Any, str]:
    client = ps.client()
    # Every shard must hold it (a restarted one holds nothing): describe raises KeyError otherwise.
    if model._table is not None and any(d.get("width") for d in _describe_or_empty(client, model._table)):
        return client, model._table
    name = f"serve_{model.uid}_{os.urandom(4).hex()}"
    ps.create_table(name, width=model._objective().width, optimizer="delta")
    model._table, model._lease = name, ps.lease(name)
    rows = weight_store.load_table(spark, client, name, model._weights_frame())
    log.info("loaded %d weight rows from %s into shard table %s", rows, model._weights_path, name)
    return client, name


def row_source(model, spark) -> tuple[Any, Any]:
    """How tasks get weight rows: ``(client, table)`` on the shards, or ``(None, broadcast)`` without them.

    With the plugin running, rows come from a shard table (:func:`live_table`).
    Without it, the Delta rows are broadcast, but only when the saved
    non-zero count proves them small (``spark.ps.broadcastMaxRows``).

    Examples
    --------
    >>> from spark_ps.ml.regression import LinearRegression
    >>> model = LinearRegression().fit(spark.createDataFrame([([1], 1.0)] * 20, "features array<bigint>, label double"))
    >>> client, table = row_source(model, spark); client is not None and table == model._table
    True
    """
    try:
        return live_table(model, spark)
    except PluginNotRunningError:
        limit = int(spark.conf.get("spark.ps.broadcastMaxRows", str(BROADCAST_MAX_ROWS)))
        if model.numNonZeros > limit:
            raise UnavailableError(
                f"scoring without parameter-server shards needs the {model._nnz} weight rows in every task, "
                f"more than spark.ps.broadcastMaxRows={limit}; start the session with "
                "spark_ps.configure_spark_with_ps so the shards serve them") from None
        keys, values = model._sparse_rows()
        return None, spark.sparkContext.broadcast((keys, values.astype(np.float32)))


def release(model) -> None:
    """Drop ``model``'s shard table now (for all its copies); it scores from Delta afterwards.

    Waits for the fit's Delta export first: until it is written, the table holds the only copy of the weights.

    Examples
    --------
    >>> from spark_ps.ml.regression import LinearRegression
    >>> from spark_ps.spark.context import PSContext
    >>> model = LinearRegression().fit(spark.createDataFrame([([1], 1.0)] * 20, "features array<bigint>, label double"))
    >>> table = model._table; release(model)
    >>> table in PSContext.get(spark).memory()["tables"], model.transform(
    ...     spark.createDataFrame([([1],)], "features array<bigint>")).count()
    (False, 1)
    """
    model._await_weights()
    lease, model._lease, model._table = model._lease, None, None
    if lease is not None:
        lease.release()


def _describe_or_empty(client, table: str) -> list[dict[str, Any]]:
    try:
        return client.describe(table)
    except KeyError:
        return []
