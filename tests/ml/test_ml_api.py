"""Our estimators are drop-in replacements for pyspark.ml's classes of the same name.

The reference is MLlib itself, introspected and run in the same session on
the same data: its Params (names, defaults, converters), getters and
setters, constructor keywords, output columns (names, types, ML attributes),
its validators' ranges and its model accessors' shapes. What MLlib cannot
tell (our accessors' values) is checked against our own ``transform`` output
and against formulas written here from their definitions.

The Params of fresh estimators and the values a fit refuses are in
``test_ml_api_params.py``, persistence in ``test_ml_api_persistence.py``,
pipelines and tuning in ``test_ml_api_pipelines.py``.
"""

from __future__ import annotations

import inspect
import math
import re
from dataclasses import dataclass

import numpy as np
import pytest
from mlapikit import (
    A9A_DIM,
    CASES,
    PS_KWARGS,
    SHARED_KWARGS,
    a9a_rows,
    auc,
    fm_margin,
    log_loss,
    regression_rows,
)
from pyspark.ml.linalg import DenseMatrix, DenseVector, SparseVector, Vectors
from test_ml_api_params import sample_value  # the non-default value a setter is tried with

CLASSIFIERS = ["LogisticRegression", "FMClassifier"]


@pytest.fixture(scope="module")
def spark(local_spark):
    """The shared local session (its fits write under a temporary ``spark.ps.checkpointDir``), quiet."""
    local_spark.sparkContext.setLogLevel("ERROR")
    return local_spark


@dataclass
class Fitted:
    ours_est: object
    ours_model: object
    ml_est: object
    ml_model: object
    train: object  # DataFrame
    test: object  # DataFrame
    _test_rows: list | None = None
    _test_metric: float | None = None

    def test_rows(self) -> list:
        """Our model's transform of the test rows (collected once)."""
        if self._test_rows is None:
            self._test_rows = self.ours_model.transform(self.test).collect()
        return self._test_rows

    def test_metric(self) -> float:
        """areaUnderROC (classifiers) or rootMeanSquaredError of ``evaluate(test)`` (computed once)."""
        if self._test_metric is None:
            metrics = self.ours_model.evaluate(self.test)
            self._test_metric = getattr(metrics, "areaUnderROC", None) or metrics.rootMeanSquaredError
        return self._test_metric


@pytest.fixture(scope="module")
def frames(spark):
    """Train/test DataFrames: a9a rows for the classifiers, a synthetic linear target for regression."""
    def frame(rows):
        return spark.createDataFrame(rows, ["label", "features"]).cache()

    reg = regression_rows(400)
    return {"binary": (frame(a9a_rows(300)), frame(a9a_rows(150, skip=300))),
            "regression": (frame(reg[:300]), frame(reg[300:]))}


@pytest.fixture(scope="module")
def fitted(frames):
    """``fitted(name)``: ours and MLlib's estimator, fitted with the same MLlib Params on the same data."""
    cache: dict[str, Fitted] = {}

    def get(name: str) -> Fitted:
        if name not in cache:
            ours_cls, ml_cls, _, _, binary = CASES[name]
            train, test = frames["binary" if binary else "regression"]
            ours_est = ours_cls(**SHARED_KWARGS[name], **PS_KWARGS[name])
            ml_est = ml_cls(**SHARED_KWARGS[name])
            cache[name] = Fitted(ours_est, ours_est.fit(train), ml_est, ml_est.fit(train), train, test)
        return cache[name]

    return get


def _summary(model):
    """The training summary, called the way MLlib's model of the same name spells it."""
    return model.summary() if inspect.ismethod(model.summary) else model.summary


# --------------------------------------------------------------------------- 1. Params of fitted estimators and models


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("kind", ["estimator", "model"])
def test_fitted_params_match_mllib(fitted, name, kind):
    """Same Params, defaults and set values on both sides after the same constructor call and fit."""
    f = fitted(name)
    ours, ml = (f.ours_est, f.ml_est) if kind == "estimator" else (f.ours_model, f.ml_model)
    for p in ml.params:
        assert ours.hasParam(p.name), f"{type(ours).__name__} lacks MLlib Param {p.name}"
        mine = ours.getParam(p.name)
        if not getattr(p, "created_from_java_param", False):
            assert mine.typeConverter is p.typeConverter, p.name
        assert ours.hasDefault(mine) == ml.hasDefault(p), p.name
        assert ours.isSet(mine) == ml.isSet(p), p.name
        if ml.isDefined(p):
            assert ours.getOrDefault(mine) == ml.getOrDefault(p), p.name


def _methods(cls, prefix: str) -> set[str]:
    return {m for m in dir(cls) if re.fullmatch(prefix + r"[A-Z]\w*", m) and callable(getattr(cls, m))}


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("kind", ["estimator", "model"])
def test_mllib_getters_and_setters_exist_and_setters_return_self(fitted, name, kind):
    f = fitted(name)
    ours, ml = (f.ours_est, f.ml_est) if kind == "estimator" else (f.ours_model, f.ml_model)
    for method in _methods(type(ml), "get") | _methods(type(ml), "set"):
        assert hasattr(ours, method), f"{type(ours).__name__} lacks MLlib's {method}"
    ours = ours.copy()
    for method in sorted(_methods(type(ml), "set") - {"setParams"}):
        param = method[3].lower() + method[4:]
        default = ours.getOrDefault(param) if ours.isDefined(param) else None
        value = sample_value(name, param, default)
        assert getattr(ours, method)(value) is ours, f"{method} must return self"
        assert ours.getOrDefault(param) == ours.getParam(param).typeConverter(value), method


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("kind", ["estimator", "model"])
def test_mllib_getters_agree_with_ours(fitted, name, kind):
    """Every zero-argument MLlib getter gives the same value on ours (or both raise)."""
    f = fitted(name)
    ours, ml = (f.ours_est, f.ml_est) if kind == "estimator" else (f.ours_model, f.ml_model)
    for method in sorted(_methods(type(ml), "get")):
        if len(inspect.signature(getattr(ml, method)).parameters) != 0:
            continue  # getParam, getOrDefault, ...
        try:
            want = getattr(ml, method)()
        except Exception as exc:  # e.g. getThresholds with neither threshold nor thresholds set
            with pytest.raises(type(exc) if not type(exc).__module__.startswith("py4j") else Exception):
                getattr(ours, method)()
            continue
        assert getattr(ours, method)() == want, method


@pytest.mark.parametrize("name", CASES)
def test_model_uid_is_estimator_uid(fitted, name):
    f = fitted(name)
    assert f.ml_model.uid == f.ml_est.uid  # the reference behaviour
    assert f.ours_model.uid == f.ours_est.uid
    assert type(f.ours_model) is CASES[name][2]
    assert all(p.parent == f.ours_model.uid for p in f.ours_model.params)


@pytest.mark.parametrize("name", CASES)
def test_transform_columns_types_and_attributes_match_mllib(fitted, name):
    f = fitted(name)
    want = f.ml_model.transform(f.test).schema
    got = f.ours_model.transform(f.test).schema
    assert got.names == want.names
    for g, w in zip(got.fields, want.fields):
        assert g.dataType == w.dataType, g.name
        assert g.metadata == w.metadata, g.name


OUTPUT_COLS = [(n, c) for n in CLASSIFIERS for c in ("rawPredictionCol", "probabilityCol", "predictionCol")] \
    + [("LinearRegression", "predictionCol")]


@pytest.mark.parametrize(("name", "col"), OUTPUT_COLS)
def test_empty_output_column_is_dropped_like_mllib(fitted, name, col):
    f = fitted(name)
    setter = "set" + col[0].upper() + col[1:]
    ml = getattr(f.ml_model.copy(), setter)("")
    ours = getattr(f.ours_model.copy(), setter)("")
    assert ours.transform(f.test).columns == ml.transform(f.test).columns
    assert f.ours_model.getOrDefault(col) not in ours.transform(f.test).columns
    # The remaining outputs are unchanged, and metrics still work (they score into a temporary column).
    part = ours.transform(f.test).collect()
    assert len(part) == len(f.test_rows())
    for a, b in zip(f.test_rows(), part):
        for c in b.asDict():
            assert a[c] == b[c], c
    if name == "LinearRegression":
        assert ours.evaluate(f.test).rootMeanSquaredError == pytest.approx(f.test_metric(), rel=1e-12)
    else:
        assert ours.evaluate(f.test).areaUnderROC == pytest.approx(f.test_metric(), rel=1e-12)


# --------------------------------------------------------------------------- 2. unsupported values at transform


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_model_thresholds_of_wrong_length_raise_at_transform(fitted, name):
    f = fitted(name)
    model = f.ours_model.copy().setThresholds([0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match="thresholds must have length 2"):
        model.transform(f.test)
    with pytest.raises(ValueError, match="thresholds must have length 2"):
        model.predict(f.test.first().features)


# --------------------------------------------------------------------------- 3. bad input data


def _spark_error_text(excinfo) -> str:
    """The text a user sees: Spark wraps a task's Python exception (and its message) in its own."""
    return str(excinfo.value)


@pytest.mark.parametrize(("name", "bad_label"), [("LogisticRegression", 2.0), ("FMClassifier", -1.0)])
def test_labels_outside_0_1_name_the_column_and_value(spark, name, bad_label):
    rows = [(bad_label if i == 5 else float(i % 2), Vectors.sparse(4, [i % 4], [1.0])) for i in range(20)]
    df = spark.createDataFrame(rows, ["target", "features"])
    with pytest.raises(ValueError) as excinfo:  # the task's own error, not Spark's Py4JJavaError around it
        CASES[name][0](labelCol="target", numEpochs=1).fit(df)
    text = str(excinfo.value)
    assert text.startswith("label column 'target' row ")
    assert f"label {bad_label} is not 0 or 1" in text


@pytest.mark.parametrize(("name", "bad"), [("LogisticRegression", float("nan")), ("LinearRegression", float("inf"))])
def test_non_finite_features_fail_the_fit_naming_column_and_value(spark, name, bad):
    rows = [(float(i % 2), Vectors.dense([bad if i == 7 else 1.0, float(i)])) for i in range(20)]
    df = spark.createDataFrame(rows, ["label", "feats"])
    with pytest.raises(ValueError) as excinfo:  # the task's own error, not Spark's Py4JJavaError around it
        CASES[name][0](featuresCol="feats", numEpochs=1).fit(df)
    text = str(excinfo.value)
    assert "column 'feats'" in text and "collectToPython" not in text
    assert f"non-finite feature value {bad} (feature index 0)" in text


def test_non_finite_features_fail_transform_naming_column_and_value(spark, fitted):
    f = fitted("FMClassifier")
    df = spark.createDataFrame([(0.0, Vectors.sparse(A9A_DIM, [3, 9], [1.0, float("nan")]))], ["label", "features"])
    with pytest.raises(Exception) as excinfo:
        f.ours_model.transform(df).collect()
    assert "column 'features'" in _spark_error_text(excinfo)
    assert "non-finite feature value nan (feature index 9)" in _spark_error_text(excinfo)


def test_non_finite_label_fails_regression(spark):
    rows = [(float("nan") if i == 3 else 1.0, Vectors.dense([1.0, 2.0])) for i in range(10)]
    with pytest.raises(Exception) as excinfo:
        CASES["LinearRegression"][0](numEpochs=1).fit(spark.createDataFrame(rows, ["label", "features"]))
    assert "label column 'label'" in _spark_error_text(excinfo)
    assert "non-finite label nan" in _spark_error_text(excinfo)


def test_a_union_of_single_partition_frames_fits_like_its_rows(fitted):
    """Two one-partition halves, unioned: 2 partitions, as many as the workers, yet Spark refuses a barrier stage
    over a union of differently partitioned ancestors; the fit must shuffle them instead of failing."""
    plain = fitted("LogisticRegression")
    rows = plain.train.collect()
    session = plain.train.sparkSession
    halves = [session.createDataFrame(session.sparkContext.parallelize(part, 1), plain.train.schema)
              for part in (rows[:150], rows[150:])]
    union = halves[0].union(halves[1])
    assert union.rdd.getNumPartitions() == 2
    model = type(plain.ours_est)(**SHARED_KWARGS["LogisticRegression"], **PS_KWARGS["LogisticRegression"]).fit(union)
    assert model.summary.totalIterations == plain.ours_model.summary.totalIterations
    scored = model.transform(plain.test).select("label", "probability").collect()
    area = auc([r.label for r in scored], [r.probability[1] for r in scored])
    assert area == pytest.approx(plain.test_metric(), abs=0.02)


@pytest.mark.parametrize("name", CASES)
def test_missing_columns_and_empty_data_are_named(frames, name):
    ours_cls, *_, binary = CASES[name]
    train, _ = frames["binary" if binary else "regression"]
    with pytest.raises(ValueError, match=r"features column 'feats' not found.*available columns: \['label', "):
        ours_cls(featuresCol="feats").fit(train)
    with pytest.raises(ValueError, match=r"label column 'y' not found"):
        ours_cls(labelCol="y").fit(train)
    with pytest.raises(ValueError, match=r"weight column 'w' not found"):
        ours_cls(weightCol="w").fit(train)
    with pytest.raises(ValueError, match=r"empty DataFrame \(0 rows\)"):
        ours_cls().fit(train.limit(0))


@pytest.mark.parametrize("name", CASES)
def test_transform_without_features_column_names_it(fitted, name):
    f = fitted(name)
    with pytest.raises(ValueError, match=r"features column 'features' not found"):
        f.ours_model.transform(f.test.select("label"))


# --------------------------------------------------------------------------- 6. accessors


@pytest.mark.parametrize("name", CASES)
def test_num_features_matches_mllib(fitted, name):
    f = fitted(name)
    assert f.ours_model.numFeatures == f.ml_model.numFeatures
    if name != "LinearRegression":
        assert f.ours_model.numClasses == f.ml_model.numClasses


def _scored(model, df):
    return model.transform(df).collect()


@pytest.mark.parametrize("name", ["LogisticRegression", "LinearRegression"])
def test_coefficients_are_the_nonzeros_and_reproduce_transform(fitted, name):
    f = fitted(name)
    model = f.ours_model
    coef = model.coefficients
    assert isinstance(coef, SparseVector)
    assert coef.size == model.numFeatures == f.ml_model.coefficients.size
    assert len(coef.indices) > 0 and np.all(coef.values != 0.0)
    assert np.all(np.diff(coef.indices) > 0)
    assert isinstance(model.intercept, float)
    for row in f.test_rows():
        margin = coef.dot(row.features) + model.intercept
        got = row.rawPrediction[1] if name == "LogisticRegression" else row.prediction
        assert got == pytest.approx(margin, rel=1e-6, abs=1e-6)


def test_logistic_coefficient_matrix_and_intercept_vector_match_mllib_shapes(fitted):
    f = fitted("LogisticRegression")
    ours, ml = f.ours_model, f.ml_model
    assert (ours.coefficientMatrix.numRows, ours.coefficientMatrix.numCols) == \
        (ml.coefficientMatrix.numRows, ml.coefficientMatrix.numCols)
    np.testing.assert_array_equal(ours.coefficientMatrix.toArray()[0], ours.coefficients.toArray())
    assert isinstance(ours.interceptVector, DenseVector) and len(ours.interceptVector) == len(ml.interceptVector)
    assert ours.interceptVector[0] == ours.intercept


def test_fm_linear_and_factors_reproduce_transform(fitted):
    f = fitted("FMClassifier")
    model = f.ours_model
    linear, factors = model.linear, model.factors
    assert isinstance(linear, SparseVector) and np.all(linear.values != 0.0)
    assert linear.size == f.ml_model.linear.size
    assert isinstance(factors, DenseMatrix)
    assert (factors.numRows, factors.numCols) == (f.ml_model.factors.numRows, f.ml_model.factors.numCols)
    dense_factors = factors.toArray()
    assert np.any(dense_factors != 0.0)
    for row in _scored(model, f.train):  # features seen in training (unseen ones: see the next test)
        want = fm_margin(row.features, model.intercept, linear, dense_factors)
        assert row.rawPrediction[1] == pytest.approx(want, rel=1e-5, abs=1e-6)


def _unseen_feature(df) -> int:
    seen = {int(i) for row in df.select("features").collect() for i in row.features.indices}
    return min(set(range(A9A_DIM)) - seen)


def test_fm_scores_a_feature_unseen_in_training_like_its_persisted_weights(spark, fitted):
    f = fitted("FMClassifier")
    model = f.ours_model
    row = f.train.first()
    unseen = _unseen_feature(f.train)
    entries = dict(zip(row.features.indices.tolist(), row.features.values.tolist())) | {unseen: 1.0}
    vec = Vectors.sparse(A9A_DIM, sorted(entries), [entries[k] for k in sorted(entries)])
    scored = model.transform(spark.createDataFrame([(row.label, vec)], ["label", "features"])).first()
    want = fm_margin(vec, model.intercept, model.linear, model.factors.toArray())
    assert model.predictRaw(vec)[1] == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert scored.rawPrediction[1] == pytest.approx(want, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("name", CASES)
def test_single_vector_predictions_agree_with_transform(fitted, name):
    f = fitted(name)
    rows = f.test_rows()[:2]
    dense = Vectors.dense(rows[0].features.toArray())  # a dense vector must score like its sparse twin
    for row, vec in [(r, r.features) for r in rows] + [(rows[0], dense)]:
        got = f.ours_model.predict(vec)
        assert type(got) is type(f.ml_model.predict(vec)) is float
        assert got == pytest.approx(row.prediction, rel=1e-6, abs=1e-6)
        if name == "LinearRegression":
            continue
        raw, prob = f.ours_model.predictRaw(vec), f.ours_model.predictProbability(vec)
        assert type(raw) is type(f.ml_model.predictRaw(vec))
        assert type(prob) is type(f.ml_model.predictProbability(vec))
        np.testing.assert_allclose(raw.toArray(), row.rawPrediction.toArray(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(prob.toArray(), row.probability.toArray(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", CASES)
def test_training_summary_and_evaluate(fitted, name):
    f = fitted(name)
    model = f.ours_model
    assert inspect.ismethod(model.summary) == inspect.ismethod(f.ml_model.summary)  # FM: summary() is a method
    assert model.hasSummary
    summary = _summary(model)
    epochs = f.ours_est.getNumEpochs()
    assert summary.totalIterations == epochs == len(summary.objectiveHistory)
    assert all(math.isfinite(v) and v >= 0 for v in summary.objectiveHistory)
    for df, metrics in [(f.train, summary), (f.test, model.evaluate(f.test))]:
        rows = _scored(model, df)
        labels = np.array([r.label for r in rows])
        if name == "LinearRegression":
            err = np.array([r.prediction for r in rows]) - labels
            assert metrics.rootMeanSquaredError == pytest.approx(np.sqrt(np.mean(err ** 2)), rel=1e-9)
            assert metrics.r2 == pytest.approx(1 - np.sum(err ** 2) / np.sum((labels - labels.mean()) ** 2),
                                               rel=1e-9)
        else:
            assert metrics.areaUnderROC == pytest.approx(auc(labels, [r.rawPrediction[1] for r in rows]),
                                                         abs=1e-9)


def test_objective_history_is_the_mean_loss_of_each_epoch(spark, frames):
    """One worker, one mini-batch per epoch: epoch e's loss is that of the model after e - 1 epochs.

    With zero coefficients and the intercept at the log-odds of the mean label
    p (MLlib's start), the first entry is the label entropy; the second is the
    training loss of a separately fitted one-epoch model, from its transform.
    """
    train, _ = frames["binary"]
    # priorL1 is per pass (FTRL's L1 grows with numEpochs): off, so that the first epoch
    # of a two-epoch fit is the same as a one-epoch fit.
    kwargs = dict(numWorkers=1, syncMode="bsp", batchSize=10_000, alpha=0.5, regParam=0.0, priorL1=0.0)
    ours_cls = CASES["LogisticRegression"][0]
    one = ours_cls(numEpochs=1, **kwargs).fit(train)
    two = ours_cls(numEpochs=2, **kwargs).fit(train)
    history = two.summary.objectiveHistory
    p = np.mean([r.label for r in train.select("label").collect()])
    assert history[0] == pytest.approx(-p * math.log(p) - (1 - p) * math.log(1 - p), rel=1e-9)
    rows = _scored(one, train)
    assert history[1] == pytest.approx(log_loss([r.label for r in rows], [r.rawPrediction[1] for r in rows]),
                                       rel=1e-5)


def test_regression_history_starts_at_half_mean_square_of_labels(spark, fitted):
    """From zero weights, the first epoch's mean loss (one mini-batch, one worker) is mean(y^2) / 2."""
    f = fitted("LinearRegression")
    ours_cls = CASES["LinearRegression"][0]
    model = ours_cls(numEpochs=1, numWorkers=1, syncMode="bsp", batchSize=10_000).fit(f.train)
    labels = np.array([r.label for r in f.train.select("label").collect()])
    assert model.summary.objectiveHistory[0] == pytest.approx(0.5 * np.mean(labels ** 2), rel=1e-9)
