"""Saving and loading our estimators and models as MLlib's are saved and loaded.

The reference for a loaded model is the model itself before saving: same
class, uid, Params and accessors, and the same predictions, in this session
and in a fresh session that has Delta but no spark-ps plugin (a subprocess:
a Python process runs only one SparkContext).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlapikit import CASES, PS_KWARGS, SHARED_KWARGS, a9a_rows, regression_rows
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.feature import StandardScaler
from pyspark.ml.functions import vector_to_array
from pyspark.ml.linalg import VectorUDT

FRESH_SESSION_SCRIPT = Path(__file__).resolve().parent / "ml_fresh_session_load.py"


@pytest.fixture(scope="module")
def spark(local_spark):
    """The shared local session (its fits write under a temporary ``spark.ps.checkpointDir``), quiet."""
    local_spark.sparkContext.setLogLevel("ERROR")
    return local_spark


@pytest.fixture(scope="module")
def frames(spark):
    """Training frames with an ``id``; predictions are compared on training rows (see FM's xfail in test_ml_api)."""
    def frame(rows):
        return spark.createDataFrame([(i, y, x) for i, (y, x) in enumerate(rows)], ["id", "label", "features"]).cache()
    return {True: frame(a9a_rows(200)), False: frame(regression_rows(200))}


@pytest.fixture(scope="module")
def models(frames):
    """One fitted model per estimator (fitted once for the module)."""
    out = {}
    for name, (ours_cls, *_, binary) in CASES.items():
        est = ours_cls(**SHARED_KWARGS[name], **PS_KWARGS[name])
        out[name] = (est, est.fit(frames[binary]), frames[binary])
    return out


@pytest.fixture(scope="module")
def saved(models, tmp_path_factory):
    """Each model saved once with ``model.save(path)``."""
    root = tmp_path_factory.mktemp("saved")
    paths = {}
    for name, (_, model, _) in models.items():
        paths[name] = str(root / name)
        model.save(paths[name])
    return paths


def _predictions(model, df) -> dict[str, np.ndarray]:
    """Output columns by id, vectors as 2-D arrays."""
    out = model.transform(df)
    new = [f for f in out.schema.fields if f.name not in df.columns]
    rows = out.select("id", *[vector_to_array(f.name).alias(f.name) if isinstance(f.dataType, VectorUDT)
                              else f.name for f in new]).orderBy("id").collect()
    return {f.name: np.array([r[f.name] for r in rows], dtype=float) for f in new} | \
        {"id": np.array([r.id for r in rows])}


def _assert_same_predictions(got: dict, want: dict):
    assert sorted(got) == sorted(want)
    for col in want:
        np.testing.assert_allclose(got[col], want[col], rtol=1e-9, atol=1e-12, err_msg=col)


def _param_values(obj) -> dict:
    return {p.name: obj.getOrDefault(p) for p in obj.params if obj.isDefined(p)}


def _set_params(obj) -> set:
    return {p.name for p in obj.params if obj.isSet(p)}


def _accessors(name, model) -> list:
    if name == "FMClassifier":
        return [model.intercept, model.numFeatures, model.linear, model.factors.toArray().tolist()]
    return [model.intercept, model.numFeatures, model.coefficients]


@pytest.mark.parametrize("name", CASES)
def test_save_and_load_round_trip(models, saved, name):
    _, model, df = models[name]
    model_cls = CASES[name][2]
    loaded = model_cls.load(saved[name])
    assert type(loaded) is model_cls and loaded.uid == model.uid
    assert _param_values(loaded) == _param_values(model)
    assert _set_params(loaded) == _set_params(model)
    assert _accessors(name, loaded) == _accessors(name, model)
    _assert_same_predictions(_predictions(loaded, df), _predictions(model, df))
    # Like MLlib: a loaded model has no training summary, but evaluates.
    assert model.hasSummary and not loaded.hasSummary
    with pytest.raises(RuntimeError, match="summary"):
        loaded.summary() if name == "FMClassifier" else loaded.summary
    if name != "LinearRegression":
        assert loaded.evaluate(df).areaUnderROC == pytest.approx(model.evaluate(df).areaUnderROC, abs=1e-12)


@pytest.mark.parametrize("name", CASES)
def test_fit_exports_every_non_zero_weight_row_to_delta(spark, models, name):
    """numNonZeros (summed by the export tasks) counts the rows with a non-zero weight; no stored row is all zero.

    A row whose weights are 0 but whose optimizer state is not (FTRL under L1)
    is stored too: a stream that continues from the model needs it.
    """
    _, model, _ = models[name]
    weights = spark.read.format("delta").load(model.weightsPath)  # waits for the background export
    assert weights.where("exists(value, v -> v != 0)").count() == model.numNonZeros > 0
    state = [c for c in weights.columns if c.startswith("state_")]
    assert state, "the optimizer state is saved with the weights"
    anything = " or ".join(f"exists({c}, v -> v != 0)" for c in ["value", *state])
    assert weights.where(f"not ({anything})").count() == 0


def test_a_failed_background_export_is_raised_to_whoever_waits(spark, monkeypatch, tmp_path):
    from spark_ps.ml import weights as weight_store

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(weight_store, "save_table", broken_save)
    finished = []
    export = weight_store.BackgroundExport(spark, None, "t", str(tmp_path / "w"), then=lambda: finished.append(1))
    with pytest.raises(OSError, match="disk full"):
        export.result()
    assert export.done() and finished == [1]


def test_second_save_needs_overwrite(models, tmp_path):
    _, model, df = models["LogisticRegression"]
    path = str(tmp_path / "lr")
    model.save(path)
    with pytest.raises(Exception, match="already exists"):
        model.save(path)
    with pytest.raises(Exception, match="already exists"):
        model.write().save(path)
    model.write().overwrite().save(path)
    _assert_same_predictions(_predictions(CASES["LogisticRegression"][2].load(path), df), _predictions(model, df))


def _delta_versions(spark, path: str) -> list[int]:
    return sorted(r.version for r in spark.sql(f"DESCRIBE HISTORY delta.`{path}`").collect())


def test_overwrite_adds_a_version_to_the_weights_delta_table(spark, models, tmp_path):
    _, model, _ = models["LogisticRegression"]
    path = str(tmp_path / "lr")
    model.save(path)
    before = _delta_versions(spark, os.path.join(path, "weights"))
    model.write().overwrite().save(path)
    after = _delta_versions(spark, os.path.join(path, "weights"))
    assert max(after) > max(before), (before, after)


def test_loaded_model_can_be_saved_over_its_own_path(models, tmp_path):
    _, model, df = models["LogisticRegression"]
    model_cls = CASES["LogisticRegression"][2]
    path = str(tmp_path / "lr")
    model.save(path)
    model_cls.load(path).write().overwrite().save(path)
    _assert_same_predictions(_predictions(model_cls.load(path), df), _predictions(model, df))


@pytest.mark.parametrize("name", CASES)
def test_estimator_save_and_load_round_trip_params(name, tmp_path, spark):
    ours_cls = CASES[name][0]
    est = ours_cls(**SHARED_KWARGS[name], numEpochs=7, optimizer="ftrl", alpha=0.05, beta=0.5, syncMode="bsp",
                   staleness=2, batchSize=64, numWorkers=1, psTimeout=30.0, checkpointDir=str(tmp_path / "c"),
                   labelCol="target", weightCol="w")
    est.save(str(tmp_path / "est"))
    loaded = ours_cls.load(str(tmp_path / "est"))
    assert type(loaded) is ours_cls and loaded.uid == est.uid
    assert _param_values(loaded) == _param_values(est)
    assert _set_params(loaded) == _set_params(est)


def _pipeline(ours_cls):
    return Pipeline(stages=[StandardScaler(inputCol="features", outputCol="scaled", withMean=False),
                            ours_cls(featuresCol="scaled", **PS_KWARGS["LogisticRegression"])])


@pytest.fixture(scope="module")
def pipeline_saved(frames, tmp_path_factory):
    """A Pipeline (StandardScaler, our LogisticRegression) saved, loaded, fitted, and its PipelineModel saved."""
    root = tmp_path_factory.mktemp("pipeline")
    pipeline = _pipeline(CASES["LogisticRegression"][0])
    pipeline.save(str(root / "pipeline"))
    loaded_pipeline = Pipeline.load(str(root / "pipeline"))
    fitted = loaded_pipeline.fit(frames[True])
    fitted.write().overwrite().save(str(root / "pipeline_model"))
    return pipeline, loaded_pipeline, fitted, str(root / "pipeline_model")


def test_pipeline_and_pipeline_model_save_and_load(frames, pipeline_saved):
    ours_model_cls = CASES["LogisticRegression"][2]
    pipeline, loaded_pipeline, fitted, model_path = pipeline_saved
    assert [type(s) for s in loaded_pipeline.getStages()] == [type(s) for s in pipeline.getStages()]
    assert loaded_pipeline.getStages()[1].uid == pipeline.getStages()[1].uid
    assert _param_values(loaded_pipeline.getStages()[1]) == _param_values(pipeline.getStages()[1])
    assert _set_params(loaded_pipeline.getStages()[1]) == _set_params(pipeline.getStages()[1])
    loaded = PipelineModel.load(model_path)
    assert type(loaded.stages[1]) is ours_model_cls and loaded.stages[1].uid == fitted.stages[1].uid
    _assert_same_predictions(_predictions(loaded, frames[True]), _predictions(fitted, frames[True]))


@pytest.mark.slow  # a Spark application of its own, ~31 s: make test-slow keeps make test under ten minutes
def test_load_and_score_in_a_fresh_session_without_parameter_server(spark, models, saved, frames, pipeline_saved,
                                                                      tmp_path):
    """A session with Delta only (no plugin, no shards) loads each saved model and scores like this one."""
    _, _, pipeline_model, pipeline_path = pipeline_saved
    jobs = {name: (f"{CASES[name][2].__module__}.{CASES[name][2].__name__}", saved[name], model, df)
            for name, (_, model, df) in models.items()}
    jobs["Pipeline"] = ("pyspark.ml.PipelineModel", pipeline_path, pipeline_model, frames[True])
    inputs = {}
    for binary, df in frames.items():
        inputs[binary] = str(tmp_path / f"input_{int(binary)}.parquet")
        df.write.parquet(inputs[binary])
    spec = {"models": [{"class": cls, "path": path, "input": inputs[df is frames[True]],
                        "output": str(tmp_path / f"out_{name}.parquet")}
                       for name, (cls, path, _, df) in jobs.items()]}
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    env.pop("PYSPARK_SUBMIT_ARGS", None)
    # This session stays up but idle while the subprocess runs its own (a process holds one SparkContext).
    proc = subprocess.run([sys.executable, str(FRESH_SESSION_SCRIPT), str(spec_path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert proc.stdout.count("scored ") == len(jobs)

    for name, (_, _, model, df) in jobs.items():
        rows = spark.read.parquet(str(tmp_path / f"out_{name}.parquet")).orderBy("id").collect()
        got = {c: np.array([r[c] for r in rows], dtype=float) for c in rows[0].asDict()}
        _assert_same_predictions(got, _predictions(model, df))
