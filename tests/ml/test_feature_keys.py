"""64-bit feature keys end to end: FieldHasher, then fit, transform, save, load on a key column.

The reference for a key column is the same rows as ``VectorUDT``s: keys
mapped to their rank among all keys (an order-preserving map, so every row's
entries and every mini-batch's pulled keys come in the same order). With one
worker and BSP the two fits do the same arithmetic, so the key model's
weight of key ``k`` must equal the vector model's coefficient ``rank(k)``.
FM rows start from a pure function of the key (``server/rowinit``), so for
FM the check is the round trip and the learning, not equality.
"""

from __future__ import annotations

import numpy as np
import pytest
from pyspark.ml.linalg import Vectors
from pyspark.sql import functions as F

from spark_ps.ml.classification import FMClassifier, LogisticRegression, LogisticRegressionModel
from spark_ps.ml.feature import FieldHasher
from spark_ps.ml.keycolumns import BIAS_KEY
from spark_ps.ml.regression import LinearRegression

INT64_MAX = np.iinfo(np.int64).max
#: Keys above 2^31, negative ones and the two ends of int64 (INT64_MIN + 1: INT64_MIN is the intercept's).
KEYS = np.array([2**31, 2**31 + 1, 2**40, -(2**40), -5, -1, 3, INT64_MAX, BIAS_KEY + 1, 2**62 + 7], np.int64)
DETERMINISTIC = {"numWorkers": 1, "syncMode": "bsp", "batchSize": 50, "numEpochs": 2}
KEY_STRUCT = "struct<keys: array<bigint>, values: array<float>>"


def make_rows(n=600, seed=3):
    """(label, keys, values) rows with a known linear truth over KEYS; repeated keys in some rows."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(0, 1.5, len(KEYS))
    rows = []
    for _ in range(n):
        pos = rng.choice(len(KEYS), rng.integers(1, 5), replace=False)
        values = rng.choice([0.5, 1.0, 2.0], len(pos))
        p = 1 / (1 + np.exp(-(values @ truth[pos])))
        rows.append((float(rng.random() < p), KEYS[pos].tolist(), values.tolist()))
    return rows


@pytest.fixture(scope="module")
def frames(local_spark):
    rows = make_rows()
    rank = {int(k): i for i, k in enumerate(np.sort(KEYS))}
    keyed = local_spark.createDataFrame([(y, {"keys": k, "values": v}) for y, k, v in rows],
                                        f"label double, features {KEY_STRUCT}")
    vectors = local_spark.createDataFrame(
        [(y, Vectors.sparse(len(KEYS), *zip(*sorted(zip([rank[x] for x in k], v))))) for y, k, v in rows],
        ["label", "features"])
    return keyed, vectors, rank


@pytest.fixture(scope="module")
def key_lr(frames):
    """LogisticRegression on the key column, shared by the equality and the save/load tests (a fit is 3-5 s)."""
    return LogisticRegression(**DETERMINISTIC).fit(frames[0])


@pytest.mark.parametrize("estimator_class", [LogisticRegression, LinearRegression])
def test_key_column_fit_equals_the_vector_fit_of_the_ranked_keys(frames, key_lr, estimator_class):
    keyed, vectors, rank = frames
    by_key = key_lr if estimator_class is LogisticRegression else estimator_class(**DETERMINISTIC).fit(keyed)
    by_vector = estimator_class(**DETERMINISTIC).fit(vectors)
    coefficients = by_vector.coefficients.toArray()
    ours = by_key.weightsOf(KEYS.tolist())[:, 0]
    assert np.any(ours != 0.0)
    np.testing.assert_allclose(ours, [coefficients[rank[int(k)]] for k in KEYS], rtol=1e-6, atol=1e-7)
    assert by_key.intercept == pytest.approx(by_vector.intercept, rel=1e-6)
    assert by_key.numFeatures == -1 and by_vector.numFeatures == len(KEYS)
    scored = by_key.transform(keyed).select("prediction").toPandas()["prediction"].to_numpy()
    reference = by_vector.transform(vectors).select("prediction").toPandas()["prediction"].to_numpy()
    np.testing.assert_allclose(scored, reference, rtol=1e-6, atol=1e-7)


def test_key_column_model_saves_and_loads_and_has_no_vector_form(frames, key_lr, tmp_path):
    keyed, _, _ = frames
    model = key_lr
    model.save(str(tmp_path / "lr"))
    loaded = LogisticRegressionModel.load(str(tmp_path / "lr"))
    assert loaded.numFeatures == -1
    np.testing.assert_array_equal(loaded.weightsOf(KEYS.tolist()), model.weightsOf(KEYS.tolist()))
    before = model.transform(keyed).select("probability").collect()
    assert loaded.transform(keyed).select("probability").collect() == before
    with pytest.raises(ValueError, match="64-bit keys.*weightsOf"):
        _ = loaded.coefficients


def test_fm_classifier_learns_from_a_key_column_and_round_trips(frames, tmp_path):
    keyed, _, _ = frames
    model = FMClassifier(factorSize=2, **DETERMINISTIC).fit(keyed)
    assert model.summary().areaUnderROC > 0.7
    model.save(str(tmp_path / "fm"))
    loaded = type(model).load(str(tmp_path / "fm"))
    assert loaded.transform(keyed).select("probability").collect() == \
        model.transform(keyed).select("probability").collect()
    assert loaded.weightsOf([int(KEYS[0])]).shape == (1, 3)


def test_bare_key_lists_are_binary_features_and_the_intercept_key_is_refused(local_spark):
    rows = [(1.0, [2**45, 2**45]), (0.0, [-(2**45)])] * 500
    model = LinearRegression(**DETERMINISTIC).fit(local_spark.createDataFrame(rows, "label double, features "
                                                                                     "array<bigint>"))
    # A key repeated in a row is one feature of value 2: the fit sees x = 2 where y = 1.
    pos, neg = model.weightsOf([2**45, -(2**45)])[:, 0]
    assert 2 * pos + model.intercept == pytest.approx(1.0, abs=0.05)
    assert neg + model.intercept == pytest.approx(0.0, abs=0.05)
    bad = local_spark.createDataFrame([(1.0, [7, BIAS_KEY])], "label double, features array<bigint>")
    with pytest.raises(Exception, match=f"row 0: key {BIAS_KEY} is reserved for the model's intercept"):
        LinearRegression(**DETERMINISTIC).fit(bad)


# ---------------------------------------------------------------------------------------------- FieldHasher


@pytest.fixture(scope="module")
def raw(local_spark):
    rng = np.random.default_rng(11)
    n = 4000
    city = rng.choice([f"city{i}" for i in range(300)] + [None], n).tolist()
    ad = rng.choice([f"ad{i}" for i in range(2000)], n).tolist()
    price = rng.choice([0.0, 1.0, 2.0, 3.0, 50.0, 1e4, None], n).tolist()
    return local_spark.createDataFrame(list(zip(city, ad, price, ad)),
                                       "city string, ad string, price double, same_as_ad string")


def test_hashed_keys_avoid_vector_indices_and_the_intercept_and_do_not_collide(raw):
    hasher = FieldHasher(hashCols=["city", "ad", "same_as_ad"], bucketCols=["price"], crosses=[["city", "ad"]])
    out = hasher.transform(raw).select(F.explode("features").alias("k"))
    stats = out.agg(F.count("k").alias("n"), F.countDistinct("k").alias("distinct"),
                    F.sum(((F.col("k") >= 0) & (F.col("k") < 2**31)).cast("int")).alias("in_int32"),
                    F.sum((F.col("k") == F.lit(BIAS_KEY)).cast("int")).alias("bias")).head()
    assert stats.in_int32 == 0 and stats.bias == 0
    # One key per distinct (field, value): equal strings in two fields ("ad", "same_as_ad") are two features.
    expected = raw.select(
        *[F.countDistinct(c).alias(c) for c in ("city", "ad", "same_as_ad")],
        F.countDistinct(F.when(F.col("price") > 2, F.floor(F.log("price") ** 2)).otherwise(F.col("price")))
        .alias("price"), F.countDistinct("city", "ad").alias("cross")).head()
    assert stats.distinct == sum(expected)
    # Nulls are missing features: a null city drops the city key and the cross.
    lengths = hasher.transform(raw).select(
        (F.size("features") - 5 + F.col("city").isNull().cast("int") * 2
         + F.col("price").isNull().cast("int")).alias("d")).distinct().collect()
    assert [r.d for r in lengths] == [0]


def test_hasher_keeps_numeric_values_and_can_use_a_vector_sized_space(raw, local_spark):
    valued = FieldHasher(hashCols=["ad"], numericCols=["price"]).transform(raw.where("price is not null"))
    assert valued.schema["features"].dataType.simpleString() == KEY_STRUCT.replace(" ", "")
    row = valued.where("price = 50").head()
    assert sorted(row.features["values"]) == [1.0, 50.0]
    small = FieldHasher(hashCols=["city", "ad"], numFeatures=1000).transform(raw)
    assert small.select(F.explode("features").alias("k")).agg(F.min("k"), F.max("k")).head() >= (0, 0)
    assert small.select(F.explode("features").alias("k")).agg(F.max("k")).head()[0] < 1000
    with pytest.raises(TypeError, match="column 'city' is string, but bucketCols"):
        FieldHasher(bucketCols=["city"]).transform(raw)
    with pytest.raises(KeyError, match="column 'nope' not found"):
        FieldHasher(hashCols=["nope"]).transform(raw)
