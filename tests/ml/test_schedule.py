"""When a fit stops, and how many rows its mini-batches take (issue 12: defaults that adapt to the data).

The stopping rule is checked against a fit that ran every pass: with one
worker in lock-step (bsp) a fit is deterministic, so a fit with a ``tol``
must repeat that fit's losses and stop exactly where the rule, applied to
them by hand here, says it should.
"""

from __future__ import annotations

import math

import pytest
from mlapikit import CASES
from pyspark.ml.linalg import Vectors

LogisticRegression = CASES["LogisticRegression"][0]

#: Deterministic fits: one worker, lock-step, no prior (priorL1 grows with numEpochs).
EXACT = dict(numWorkers=1, syncMode="bsp", batchSize=64, alpha=0.3, regParam=0.0, priorL1=0.0)


@pytest.fixture(scope="module")
def train(local_spark):
    """2,000 rows, 4 binary features, labels a noisy function of them (a pass keeps improving the loss)."""
    rows = []
    for i in range(2_000):
        on = [k for k in range(4) if (i >> k) & 1]
        margin = sum((1.5, -1.0, 0.5, -0.25)[k] for k in on) + math.sin(i)  # deterministic "noise"
        rows.append((1.0 if margin > 0 else 0.0, Vectors.sparse(4, on, [1.0] * len(on))))
    return local_spark.createDataFrame(rows, ["label", "features"]).cache()


def test_a_fit_stops_after_the_first_pass_that_improves_the_loss_by_less_than_tol(train):
    full = LogisticRegression(numEpochs=8, tol=0.0, **EXACT).fit(train).summary
    losses = full.objectiveHistory
    assert full.totalIterations == 8 and full.stopReason == "numEpochs"
    gains = [(a - b) / a for a, b in zip(losses, losses[1:], strict=False)]   # gains[i]: pass i + 2 over pass i + 1
    # A tol halfway between the second and third gain stops after pass 4 (when the gains shrink).
    assert gains[1] > gains[2] > 0, f"the losses {losses} do not improve less and less"
    tol = (gains[1] + gains[2]) / 2
    expected = next(i + 2 for i, g in enumerate(gains) if g < tol)

    stopped = LogisticRegression(numEpochs=8, tol=tol, **EXACT).fit(train).summary
    assert stopped.stopReason == "tol"
    assert stopped.totalIterations == expected < 8
    assert stopped.objectiveHistory == pytest.approx(losses[:expected], rel=1e-6)


def test_the_passes_stop_at_maxIter_or_numEpochs_whichever_is_smaller(train):
    capped = LogisticRegression(numEpochs=5, maxIter=2, tol=0.0, **EXACT).fit(train).summary
    assert (capped.totalIterations, capped.stopReason) == (2, "maxIter")
    epochs = LogisticRegression(numEpochs=3, maxIter=10, tol=0.0, **EXACT).fit(train).summary
    assert (epochs.totalIterations, epochs.stopReason) == (3, "numEpochs")


def test_every_worker_stops_after_the_same_pass(train):
    """Two workers, bounded staleness: a huge tol stops both after pass 2 (a gain below 100%), none hangs."""
    summary = LogisticRegression(numEpochs=6, tol=0.99, numWorkers=2, batchSize=64).fit(train.repartition(2)).summary
    assert (summary.totalIterations, summary.stopReason) == (2, "tol")


def test_batch_size_zero_takes_about_32_mini_batches_per_worker_and_pass(local_spark):
    """20,000 rows on one worker: 20,000 / 32 = 625 rows, rounded up to a power of two: 1,024."""
    rows = [(float(i % 3 == 0), Vectors.sparse(8, [i % 8], [1.0])) for i in range(20_000)]
    df = local_spark.createDataFrame(rows, ["label", "features"])
    model = LogisticRegression(batchSize=0, numEpochs=1, numWorkers=1).fit(df)
    assert model.summary.batchSize == 1024
    small = LogisticRegression(batchSize=0, numEpochs=1, numWorkers=1).fit(df.limit(3_000))
    assert small.summary.batchSize == 256  # 3,000 / 32 = 94 rows: raised to the smallest size, 256
    fixed = LogisticRegression(batchSize=100, numEpochs=1, numWorkers=1).fit(df.limit(3_000))
    assert fixed.summary.batchSize == 100


def test_a_negative_batch_size_is_refused_naming_the_param(train):
    with pytest.raises(ValueError, match="batchSize must be >= 0"):
        LogisticRegression(batchSize=-1).fit(train)


def test_ssp_workers_with_uneven_batch_counts_meet_after_every_pass_without_deadlock(local_spark):
    """Partitions of 300 and 100 rows: 30 and 10 batches a pass, 20 ticks apart, staleness 1.

    Without the clock padding of ``run_epochs`` the bigger worker waits for the
    smaller one's clock while that one waits for it at the end-of-pass meeting
    (a ``tol`` makes them meet): the fit ends only at ``psTimeout``.
    """
    # The label is a function of the feature, so every pass's loss is lower than the last and the
    # tol (growth also stops a fit) cannot end the fit early whatever the order SSP applies pushes in.
    rows = [(float(i % 4 == 0), Vectors.sparse(4, [i % 4], [1.0]), int(i >= 300)) for i in range(400)]
    df = local_spark.createDataFrame(rows, ["label", "features", "part"]).repartitionByRange(2, "part")
    assert sorted(len(p) for p in df.rdd.glom().collect()) == [100, 300]
    model = LogisticRegression(numWorkers=2, syncMode="ssp", staleness=1, batchSize=10, numEpochs=3, tol=1e-12,
                               psTimeout=20.0).fit(df)
    assert (model.summary.totalIterations, model.summary.stopReason) == (3, "numEpochs")


def test_a_fit_logs_its_conversion_and_every_epoch_with_rows_per_second(train, caplog):
    """The lines a job prints (issue 13, item 5): rows converted, then one per epoch, each with rows/s."""
    caplog.set_level("INFO", logger="spark_ps.ml")
    LogisticRegression(numWorkers=2, numEpochs=3, batchSize=64).fit(train)
    lines = [r.getMessage() for r in caplog.records if r.name == "spark_ps.ml"]
    converted = [line for line in lines if " converted 2000 rows to CSR in " in line]
    epochs = [line for line in lines if " epoch " in line]
    assert len(converted) == 1 and converted[0].endswith("rows/s)"), lines
    assert [line.split(" epoch ")[1].split(":")[0] for line in epochs] == ["1/3", "2/3", "3/3"], lines
    assert all(" rows/s " in line and "ETA" in line for line in epochs), epochs
    assert lines.index(converted[0]) < lines.index(epochs[0])


def test_epoch_lines_count_the_passes_the_rows_give_once_they_are_converted(local_spark, caplog):
    """50,000 rows and numEpochs left to the data: 800,000 / 50,000 = 16 passes at most, not the 20 of any data."""
    caplog.set_level("INFO", logger="spark_ps.ml")
    rows = local_spark.range(50_000).selectExpr("array(id % 4) AS features", "cast(id % 3 = 0 AS double) AS label")
    model = LogisticRegression(numWorkers=2).fit(rows)
    epochs = [r.getMessage().split(" epoch ")[1].split(":")[0] for r in caplog.records if " epoch " in r.getMessage()]
    assert epochs == [f"{k}/16" for k in range(1, model.summary.totalIterations + 1)], epochs
