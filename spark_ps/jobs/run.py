"""The three batch jobs (train, predict, evaluate) as functions of a session and a :class:`JobConf`.

``jobs/train.py``, ``jobs/predict.py`` and ``jobs/evaluate.py`` are thin
spark-submit entry points over :func:`main`. Decisions:

- **A model version carries how its features were made.** ``train`` records
  the ``[features]`` settings (the :class:`~spark_ps.ml.feature.FieldHasher`
  Params) in the version's lineage, so ``predict`` and ``evaluate`` hash
  the same way without being told, and an older version is read with its
  own hashing.
- **Nothing half-written.** A save is one Delta commit
  (:mod:`spark_ps.ml.versions`): a job that fails before it leaves the
  previous version the newest. ``predict`` appends its scores in one Delta
  commit, so a failed run adds no rows.
- **One line per failure.** Every error a user can cause (configuration,
  input, a task that refused a row) ends the job with one ``error:`` line
  naming the key, the column or the row, and exit code 2; the task's own
  error is rebuilt from Spark's wrapper (:func:`~spark_ps.spark.tasks.task_error`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from collections.abc import Callable, Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_ps.errors import MissingColumnError, PSError
from spark_ps.jobs.config import ESTIMATORS, ConfigError, FeaturesConf, JobConf, load_config
from spark_ps.jobs.evaluation import classification_metrics, positive_probability, regression_metrics, write_report
from spark_ps.jobs.inputs import InputError, features_frame, input_version, read_input
from spark_ps.ml import versions
from spark_ps.spark import deltalog, deltawrite
from spark_ps.spark.tasks import task_error

__all__ = ["JOBS", "evaluate", "main", "predict", "train"]

log = logging.getLogger("spark_ps.jobs")

#: Errors that are the user's to fix: printed as one line, exit code 2.
USER_ERRORS = (ConfigError, InputError, MissingColumnError, PSError, ValueError, TypeError, KeyError,
               FileNotFoundError)


def _estimator(conf: JobConf):
    module, name = ESTIMATORS[conf.model.estimator]
    cls = getattr(importlib.import_module(module), name)
    estimator = cls()
    for param, value in conf.model.params.items():
        if not estimator.hasParam(param):
            raise ConfigError(f"{conf.source}: [model] params: {conf.model.estimator} has no Param {param!r}")
        estimator.set(estimator.getParam(param), value)
    return estimator


def _is_regression(model) -> bool:
    return type(model).__name__.startswith("LinearRegression")


def _metrics(model, frame: DataFrame) -> dict:
    scored = model.transform(frame)
    return regression_metrics(scored) if _is_regression(model) else classification_metrics(scored)


def train(spark: SparkSession, conf: JobConf) -> dict:
    """Fit ``[model]`` on ``[input]``, score ``[test]`` if given, save a new model version with its lineage.

    Returns the summary the job prints: version, rows, seconds and metrics.
    """
    estimator = _estimator(conf)
    read_version = input_version(spark, conf.input)
    frame = features_frame(read_input(spark, conf.input, version=read_version), conf.input, conf.features)
    test = None if conf.test is None else \
        features_frame(read_input(spark, conf.test, "test"), conf.test, conf.features, section="test")
    started = time.perf_counter()
    model = estimator.fit(frame)
    seconds = time.perf_counter() - started
    metrics = {} if test is None else {k: v for k, v in _metrics(model, test).items() if isinstance(v, float)}
    lineage = versions.Lineage(conf.input.path or conf.input.table, read_version,
                               {f"test_{k}": v for k, v in metrics.items()},
                               features=conf.features.hasher_params() if conf.features.hashed else None)
    writer = model.write().overwrite().lineage(lineage)
    writer.save(conf.model.path)
    version, metadata = versions.resolve(spark, conf.model.path, writer.savedVersion)
    return {"modelPath": conf.model.path, "version": version, "rows": metadata.get("numRows"),
            "fitSeconds": round(seconds, 2), **metrics}


def _load(spark: SparkSession, conf: JobConf):
    """The model version ``[model]`` names, and the ``[features]`` it was trained with."""
    version, metadata = versions.resolve(spark, conf.model.path, conf.model.version)
    model = versions.model_class(metadata).load(conf.model.path, version=version)
    recorded = versions.lineage_of(spark, conf.model.path, version).features
    return version, model, FeaturesConf.from_hasher_params(recorded) if recorded else conf.features


def predict(spark: SparkSession, conf: JobConf) -> dict:
    """Score ``[input]`` with a model version; append ids + predictions (+ ``modelVersion``) to ``[output] path``."""
    if conf.output.path is None:
        raise ConfigError(f"{conf.source}: predict needs [output] path = \"...\" (a Delta table of scores)")
    version, model, features = _load(spark, conf)
    frame = features_frame(read_input(spark, conf.input), conf.input, features, label=False)
    scored = model.transform(frame)
    keep = list(conf.input.id) or [c for c in frame.columns if c != features.column]
    outputs = [F.col("prediction")] if _is_regression(model) else \
        [F.col("prediction"), F.col("p").alias("probability")]
    if not _is_regression(model):
        scored = positive_probability(scored)
    out = scored.select(*keep, *outputs, F.lit(version).cast("long").alias("modelVersion"))
    deltawrite.save_frame(out, conf.output.path, conf.output.mode)
    rows = deltalog.read_version(spark, conf.output.path).where(F.col("modelVersion") == version).count()
    return {"modelPath": conf.model.path, "version": version, "output": conf.output.path, "rowsWithThisVersion": rows}


def evaluate(spark: SparkSession, conf: JobConf) -> dict:
    """Metrics of a model version on ``[input]``; JSON and PNG written to ``[output] path`` (a local directory)."""
    version, model, features = _load(spark, conf)
    frame = features_frame(read_input(spark, conf.input), conf.input, features)
    metrics = {"modelPath": conf.model.path, "version": version, **_metrics(model, frame)}
    if conf.output.path:
        json_path, png_path = write_report(metrics, conf.output.path, f"{conf.model.path} v{version}")
        metrics["report"] = [json_path, png_path]
    return metrics


JOBS: dict[str, Callable[[SparkSession, JobConf], dict]] = {"train": train, "predict": predict, "evaluate": evaluate}


def _summary_line(kind: str, result: dict) -> str:
    shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.items()
             if not isinstance(v, list | dict)}
    return f"{kind}: " + ", ".join(f"{k}={v}" for k, v in shown.items())


def _show_progress() -> None:
    """Print our progress lines (``spark_ps`` loggers at INFO: conversion, epochs, export) on stderr.

    Only where the application configured no logging of its own; Spark's own
    log is quietened by ``conf/log4j2.properties``.
    """
    ours = logging.getLogger("spark_ps")
    if ours.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    ours.addHandler(handler)
    ours.setLevel(logging.INFO)


def main(kind: str, argv: Sequence[str] | None = None, spark: SparkSession | None = None) -> int:
    """Run job ``kind`` with ``--config FILE.toml`` and ``--section.key=value`` overrides; returns the exit code.

    0 on success (after one result line), 2 after one ``error:`` line for
    anything the user can fix, which leaves every output as it was.
    """
    parser = argparse.ArgumentParser(prog=f"jobs/{kind}.py", description=JOBS[kind].__doc__.splitlines()[0])
    parser.add_argument("--config", help="TOML file ([input], [features], [model], [output], [test])")
    args, overrides = parser.parse_known_args(argv)
    try:
        conf = load_config(args.config, overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _show_progress()
    owned = spark is None
    spark = spark or SparkSession.builder.appName(f"spark-ps {kind}: {conf.model.path}").getOrCreate()
    try:
        result = JOBS[kind](spark, conf)
    except Exception as exc:  # only to find the task's own error in Spark's wrapper; re-raised below otherwise
        cause = exc if isinstance(exc, USER_ERRORS) else task_error(exc)
        if cause is None or not isinstance(cause, USER_ERRORS):
            raise
        print(f"error: {type(cause).__name__}: {cause}", file=sys.stderr)
        return 2
    finally:
        if owned:
            spark.stop()
    print(_summary_line(kind, result))
    return 0
