"""One worker, BSP: the fitted model equals a single-process numpy replay of the same mini-batches.

The reference below is written from the published update rules, not from our
code: it keeps dense float64 arrays for w and the optimizer state, walks the
rows in the same order in mini-batches of the same size, computes the summed
logistic gradient of each batch and applies the closed-form update to the
coordinates present (bias included). As MLlib's, the intercept starts at the
log-odds of the mean label; FTRL's L1 is LogisticRegression's default
``priorL1`` per pass on top of regParam's.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from pyspark.ml.linalg import Vectors

from spark_ps.ml.classification import LogisticRegression

N_ROWS, DIM, BATCH, EPOCHS = 400, 25, 40, 2
REG, ALPHA = 0.002, 0.3
#: LogisticRegression's default ``priorL1``: FTRL's L1 per pass over the data.
PRIOR_L1 = 1.0


def make_rows(seed=7):
    rng = np.random.default_rng(seed)
    truth = rng.normal(0, 1.5, DIM)
    rows = []
    for _ in range(N_ROWS):
        idx = np.sort(rng.choice(DIM, rng.integers(1, 7), replace=False))
        val = rng.uniform(0.5, 1.5, len(idx))
        p = 1 / (1 + math.exp(-(val @ truth[idx] - 0.3)))
        rows.append((float(rng.random() < p), Vectors.sparse(DIM, idx.tolist(), val.tolist())))
    return rows


def reference_fit(rows, optimizer: str, reg: float):
    """Dense numpy replay; coordinate DIM is the intercept."""
    w = np.zeros(DIM + 1)
    state = {"z": np.zeros(DIM + 1), "n": np.zeros(DIM + 1), "m": np.zeros(DIM + 1), "t": np.zeros(DIM + 1),
             "acc": np.full(DIM + 1, 0.1)}
    mean_label = np.mean([label for label, _ in rows])
    w[DIM] = math.log(mean_label / (1 - mean_label))
    # FTRL starts a coordinate at w0 != 0 through z0 = -w0 (beta / alpha), its closed form at n = 0 (beta = 1).
    state["z"][DIM] = -w[DIM] / ALPHA
    # MLlib's penalty on the mean loss becomes FTRL's on the summed loss (x N rows);
    # elasticNetParam = 0 puts it all on L2. FTRL's L1 bounds the gradient summed over
    # all passes, hence the per-pass prior times EPOCHS.
    l1, l2 = reg * 0.0 * N_ROWS + PRIOR_L1 * EPOCHS, reg * 1.0 * N_ROWS
    for _ in range(EPOCHS):
        for lo in range(0, N_ROWS, BATCH):
            batch = rows[lo: lo + BATCH]
            g = np.zeros(DIM + 1)
            present = np.zeros(DIM + 1, bool)
            present[DIM] = True
            for label, vec in batch:
                idx, val = vec.indices, vec.values
                margin = val @ w[idx] + w[DIM]
                err = 1 / (1 + math.exp(-margin)) - label
                g[idx] += err * val
                g[DIM] += err
                present[idx] = True
            k = np.flatnonzero(present)
            if optimizer == "ftrl":  # McMahan et al. 2013, Algorithm 1
                n_new = state["n"][k] + g[k] ** 2
                sigma = (np.sqrt(n_new) - np.sqrt(state["n"][k])) / ALPHA
                state["z"][k] += g[k] - sigma * w[k]
                state["n"][k] = n_new
                z = state["z"][k]
                # MLlib never penalises the intercept (coordinate DIM).
                k_l1 = np.where(k == DIM, 0.0, l1)
                k_l2 = np.where(k == DIM, 0.0, l2)
                w[k] = np.where(np.abs(z) <= k_l1, 0.0,
                                -(z - np.sign(z) * k_l1) / ((1.0 + np.sqrt(n_new)) / ALPHA + k_l2))
            elif optimizer == "adagrad":
                state["acc"][k] += g[k] ** 2
                w[k] -= ALPHA * g[k] / (np.sqrt(state["acc"][k]) + 1e-7)
            elif optimizer == "sgd":
                w[k] -= ALPHA * g[k]
            elif optimizer == "adam":  # lazy Adam: per-coordinate step count
                state["t"][k] += 1
                state["m"][k] = 0.9 * state["m"][k] + 0.1 * g[k]
                state["n"][k] = 0.999 * state["n"][k] + 0.001 * g[k] ** 2
                m_hat = state["m"][k] / (1 - 0.9 ** state["t"][k])
                v_hat = state["n"][k] / (1 - 0.999 ** state["t"][k])
                w[k] -= ALPHA * m_hat / (np.sqrt(v_hat) + 1e-8)
    return w[:DIM], w[DIM]


@pytest.fixture(scope="module")
def rows_and_df(local_spark):
    rows = make_rows()
    # One input partition for one worker: the task sees the rows in list order.
    return rows, local_spark.sparkContext.parallelize(rows, 1).toDF(["label", "features"])


@pytest.mark.parametrize("optimizer", ["ftrl", "adagrad", "sgd", "adam"])
def test_single_worker_bsp_matches_numpy_replay(rows_and_df, optimizer):
    rows, df = rows_and_df
    reg = REG if optimizer == "ftrl" else 0.0  # only FTRL carries the L1/L2 terms
    model = LogisticRegression(optimizer=optimizer, alpha=ALPHA, regParam=reg, batchSize=BATCH,
                               numEpochs=EPOCHS, numWorkers=1, syncMode="bsp").fit(df)
    want_w, want_b = reference_fit(rows, optimizer, reg)
    got = model.coefficients.toArray()
    np.testing.assert_allclose(got, want_w, rtol=2e-4, atol=2e-5)
    assert model.intercept == pytest.approx(want_b, rel=2e-4, abs=2e-5)
    assert model.summary.totalIterations == EPOCHS
