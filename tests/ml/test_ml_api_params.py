"""Our estimators' Params match pyspark.ml's before any fit, and the values a fit refuses are refused.

The reference is MLlib itself, introspected in the same session: Param names,
defaults and converters, getters and setters, constructor keywords,
MLlib's ``threshold``/``thresholds`` rules, and the values its own
ParamValidators refuse. Every fit here is refused by Param validation
before training starts, so nothing is fitted or written and the shared
``local_spark`` session (no checkpoint directory) is enough. The Params of
fitted estimators and models are compared in ``test_ml_api.py``.
"""

from __future__ import annotations

import inspect
import re

import pytest
from mlapikit import A9A_DIM, CASES, a9a_rows, regression_rows
from pyspark.ml.linalg import Matrices, Vectors


@pytest.fixture(scope="module")
def training_frames(local_spark):
    """The DataFrames a fit is refused on: a9a rows for the classifiers, a linear target for regression."""
    def frame(rows):
        return local_spark.createDataFrame(rows, ["label", "features"]).cache()

    return {"binary": frame(a9a_rows(300)), "regression": frame(regression_rows(400)[:300])}


def _param_names(obj) -> list[str]:
    return [p.name for p in obj.params]


# Non-default values for Params that have no default (or where the default cannot be reused).
SAMPLE_VALUES = {
    "thresholds": [0.4, 0.6], "weightCol": "w", "seed": 7, "family": "binomial",
    "lowerBoundsOnCoefficients": Matrices.dense(1, 2, [-1.0, -1.0]),
    "upperBoundsOnCoefficients": Matrices.dense(1, 2, [1.0, 1.0]),
    "lowerBoundsOnIntercepts": Vectors.dense([-1.0]), "upperBoundsOnIntercepts": Vectors.dense([1.0]),
    "solver": {"FMClassifier": "gd", "LinearRegression": "normal"}, "loss": "squaredError",
    "optimizer": "adagrad", "syncMode": "bsp", "checkpointDir": "/tmp/spark-ps-unused", "alpha": 0.2,
    "threshold": 0.3, "miniBatchFraction": 1.0, "epsilon": 2.0,
}


def sample_value(name: str, param: str, default):
    """A value other than ``default`` for Param ``param`` of estimator ``name``, to set and read back."""
    value = SAMPLE_VALUES.get(param)
    if isinstance(value, dict):
        value = value[name]
    if value is not None:
        return value
    if isinstance(default, bool):
        return not default
    if isinstance(default, str):
        return f"{param}_x"
    if isinstance(default, int):
        return default + 3
    if isinstance(default, float):
        return default * 0.5 if default else 0.25
    raise AssertionError(f"no sample value for {param} (default {default!r})")


# --------------------------------------------------------------------------- 1. Params of fresh estimators


@pytest.mark.parametrize("name", CASES)
def test_fresh_estimators_have_every_mllib_param_with_same_default_and_converter(local_spark, name):
    ours_cls, ml_cls, *_ = CASES[name]
    ours, ml = ours_cls(), ml_cls()
    for p in ml.params:
        assert ours.hasParam(p.name), f"{name} lacks MLlib Param {p.name}"
        mine = ours.getParam(p.name)
        assert mine.typeConverter is p.typeConverter, p.name
        assert ours.hasDefault(mine) == ml.hasDefault(p), p.name
        if ml.hasDefault(p):
            assert ours.getOrDefault(mine) == ml.getOrDefault(p), p.name
        assert not ours.isSet(mine), p.name


@pytest.mark.parametrize("name", CASES)
def test_every_param_of_our_estimators_has_getter_and_setter(local_spark, name):
    """Our parameter-server knobs follow MLlib's convention too: getX, and setX returning self."""
    est = CASES[name][0]()
    for param in _param_names(est):
        cap = param[0].upper() + param[1:]
        assert callable(getattr(est, f"get{cap}", None)), f"{name} lacks get{cap}"
        setter = getattr(est, f"set{cap}", None)
        assert callable(setter), f"{name} lacks set{cap}"
        if param in ("threshold", "thresholds"):
            continue  # covered with MLlib's clearing semantics below
        default = est.getOrDefault(param) if est.isDefined(param) else None
        value = sample_value(name, param, default)
        assert setter(value) is est
        assert getattr(est, f"get{cap}")() == est.getParam(param).typeConverter(value), param


@pytest.mark.parametrize("name", CASES)
def test_constructor_and_setParams_accept_every_mllib_keyword(local_spark, name):
    ours_cls, ml_cls, *_ = CASES[name]
    ml_sig = inspect.signature(ml_cls.__init__).parameters
    ours_sig = inspect.signature(ours_cls.__init__).parameters
    kwargs = {}
    for key, p in ml_sig.items():
        if key == "self":
            continue
        assert key in ours_sig, f"{name}() lacks MLlib keyword {key}"
        assert ours_sig[key].kind is inspect.Parameter.KEYWORD_ONLY, key
        assert ours_sig[key].default == p.default, key
        if key != "thresholds" or "threshold" not in ml_sig:  # LR: threshold and thresholds must agree
            kwargs[key] = sample_value(name, key, p.default)
    with pytest.raises(TypeError):
        ours_cls("features")  # keyword only, like MLlib
    constructed = ours_cls(**kwargs)
    est = ours_cls()
    assert est.setParams(**kwargs) is est
    for key, value in kwargs.items():
        want = est.getParam(key).typeConverter(value)
        assert est.getOrDefault(key) == want, key
        assert constructed.getOrDefault(key) == want, key
        assert est.isSet(key) and constructed.isSet(key), key
    with pytest.raises((TypeError, ValueError, AttributeError)):
        est.setParams(noSuchParam=1)


def test_threshold_and_thresholds_interplay_like_mllib(local_spark):
    ours_cls, ml_cls, *_ = CASES["LogisticRegression"]
    ours, ml = ours_cls(), ml_cls()
    for op, arg in [("setThresholds", [0.3, 0.7]), ("getThreshold", None), ("setThreshold", 0.2),
                    ("getThresholds", None), ("getThreshold", None)]:
        got = getattr(ours, op)() if arg is None else getattr(ours, op)(arg)
        want = getattr(ml, op)() if arg is None else getattr(ml, op)(arg)
        if arg is None:
            assert got == pytest.approx(want), op
        for p in ("threshold", "thresholds"):
            assert ours.isSet(p) == ml.isSet(p), (op, p)
    with pytest.raises(ValueError, match="inconsistent"):
        ml_cls(threshold=0.5, thresholds=[0.2, 0.8])
    with pytest.raises(ValueError, match="inconsistent"):
        ours_cls(threshold=0.5, thresholds=[0.2, 0.8])
    # Deliberately kinder than MLlib, whose estimator's setThresholds (ProbabilisticClassifier's) keeps a set
    # threshold and then fails as inconsistent: ours follows _LogisticRegressionParams' documented rule.
    ours.setThresholds([0.5, 0.25])
    assert not ours.isSet("threshold") and ours.getThreshold() == pytest.approx(1 / 3)


# --------------------------------------------------------------------------- 2. values a fit refuses


UNSUPPORTED = [
    ("LogisticRegression", {"family": "multinomial"}, "family='multinomial' is not supported"),
    ("LogisticRegression", {"lowerBoundsOnCoefficients": Matrices.dense(1, A9A_DIM, [0.0] * A9A_DIM)},
     "lowerBoundsOnCoefficients is not supported"),
    ("LogisticRegression", {"upperBoundsOnCoefficients": Matrices.dense(1, A9A_DIM, [1.0] * A9A_DIM)},
     "upperBoundsOnCoefficients is not supported"),
    ("LogisticRegression", {"lowerBoundsOnIntercepts": Vectors.dense([0.0])}, "lowerBoundsOnIntercepts"),
    ("LogisticRegression", {"upperBoundsOnIntercepts": Vectors.dense([1.0])}, "upperBoundsOnIntercepts"),
    ("LogisticRegression", {"thresholds": [0.2, 0.3, 0.5]}, "thresholds must have length 2"),
    ("FMClassifier", {"thresholds": [0.2, 0.3, 0.5]}, "thresholds must have length 2"),
    ("FMClassifier", {"miniBatchFraction": 0.5}, "miniBatchFraction other than 1.0 is not supported"),
    ("FMClassifier", {"beta": 0.0}, "beta must be > 0 with optimizer='ftrl' and initStd > 0"),
    ("LinearRegression", {"loss": "huber"}, "loss='huber' is not supported"),
    ("LinearRegression", {"regParam": 0.1, "optimizer": "adagrad"}, "regParam > 0 needs optimizer='ftrl'"),
] + [(n, {"optimizer": "lbfgs"}, "optimizer must be one of") for n in CASES] \
  + [(n, {"syncMode": "bulk"}, "syncMode must be one of") for n in CASES] \
  + [(n, {"numEpochs": -1}, "invalid value for numEpochs") for n in CASES]


@pytest.mark.parametrize(("name", "kwargs", "message"), UNSUPPORTED,
                         ids=[f"{n}-{'-'.join(k)}" for n, k, _ in UNSUPPORTED])
def test_unsupported_values_raise_a_clear_error(training_frames, name, kwargs, message):
    ours_cls, *_, binary = CASES[name]
    train = training_frames["binary" if binary else "regression"]
    with pytest.raises(ValueError, match=re.escape(message)):
        ours_cls(**kwargs).fit(train)


# Values MLlib's own ParamValidators refuse: both sides must refuse them, ours with the Param's name.
OUT_OF_RANGE = [
    ("LogisticRegression", "regParam", -0.1), ("LogisticRegression", "elasticNetParam", 1.5),
    ("LogisticRegression", "threshold", 1.5), ("LogisticRegression", "maxIter", -1),
    ("LogisticRegression", "tol", -1.0), ("LogisticRegression", "family", "poisson"),
    ("FMClassifier", "regParam", -0.1), ("FMClassifier", "factorSize", 0), ("FMClassifier", "initStd", -1.0),
    ("FMClassifier", "stepSize", 0.0), ("FMClassifier", "miniBatchFraction", 0.0),
    ("FMClassifier", "solver", "sgd"), ("FMClassifier", "maxIter", -1),
    ("LinearRegression", "regParam", -0.1), ("LinearRegression", "elasticNetParam", -0.5),
    ("LinearRegression", "epsilon", 1.0), ("LinearRegression", "solver", "newton"),
    ("LinearRegression", "maxIter", -1), ("LinearRegression", "tol", -1.0),
]


@pytest.mark.parametrize(("name", "param", "value"), OUT_OF_RANGE)
def test_values_mllib_refuses_are_refused(training_frames, name, param, value):
    ours_cls, ml_cls, *_, binary = CASES[name]
    train = training_frames["binary" if binary else "regression"]
    with pytest.raises(Exception):  # the reference: MLlib refuses it (IllegalArgumentException from the JVM)
        ml_cls(**{param: value}).fit(train)
    with pytest.raises(ValueError, match=param):
        ours_cls(**{param: value}).fit(train)
