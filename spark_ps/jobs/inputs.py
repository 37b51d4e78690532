"""What a batch job reads, and how its rows become an estimator's columns.

Every check here runs on the driver, from the schema and the file system,
before any Spark job: a missing path, a column not in the schema, or a label
that is not numeric is one :class:`InputError` line naming the ``[input]``
key, and nothing is written. Labels outside the estimator's domain (a -1 for
a classifier) are only seen by the tasks that read the rows; the jobs
re-raise the task's own error (:func:`spark_ps.spark.tasks.task_error`).
"""

from __future__ import annotations

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import NumericType

from spark_ps.jobs.config import FeaturesConf, InputConf
from spark_ps.ml.feature import FieldHasher
from spark_ps.spark import hadoop
from spark_ps.spark.deltalog import delta_version

__all__ = ["InputError", "features_frame", "hasher_for", "input_version", "read_input"]


class InputError(ValueError):
    """A job's input is missing or does not have the columns its configuration names."""


def read_input(spark: SparkSession, conf: InputConf, section: str = "input", version: int | None = None
               ) -> DataFrame:
    """The rows ``conf`` names: a path in one of :data:`~spark_ps.jobs.config.FORMATS`, or a catalog table.

    ``version`` pins a Delta input to that version (:func:`input_version`), so
    that the version a model records is the one it was trained on.

    Raises
    ------
    InputError
        The path does not exist, the table is unknown, or the files do not
        parse with the given schema; the message names ``[section]``'s key.

    Examples
    --------
    >>> import tempfile
    >>> from spark_ps.jobs.config import InputConf
    >>> path = tempfile.mkdtemp() + "/rows.csv"
    >>> _ = open(path, "w").write("1.0\\tad7\\n0.0\\tad9\\n")
    >>> conf = InputConf(path=path, format="csv", options={"sep": "\\t"}, schema="label double, ad string")
    >>> read_input(spark, conf).collect()
    [Row(label=1.0, ad='ad7'), Row(label=0.0, ad='ad9')]
    >>> read_input(spark, InputConf(path=path + ".missing", format="csv"))
    Traceback (most recent call last):
    ...
    spark_ps.jobs.inputs.InputError: [input] path '...rows.csv.missing' does not exist
    """
    if conf.table is not None:
        try:
            return spark.read.table(conf.table)
        except AnalysisException as exc:  # TABLE_OR_VIEW_NOT_FOUND and the like: the user's table name
            raise InputError(f"[{section}] table {conf.table!r}: {str(exc).splitlines()[0]}") from None
    if not hadoop.exists(spark, conf.path):
        raise InputError(f"[{section}] path {conf.path!r} does not exist")
    reader = spark.read.format(conf.format).options(**conf.options)
    if conf.schema:
        reader = reader.schema(conf.schema)
    if conf.format == "libsvm" and conf.num_features:
        reader = reader.option("numFeatures", conf.num_features)
    if version is not None:
        reader = reader.option("versionAsOf", version)
    try:
        return reader.load(conf.path)
    except AnalysisException as exc:  # e.g. a schema that does not parse, or files of another format
        raise InputError(f"[{section}] path {conf.path!r} ({conf.format}): {str(exc).splitlines()[0]}") from None


def input_version(spark: SparkSession, conf: InputConf) -> int | None:
    """The newest Delta version of a Delta input, to read and to record (None for other formats and tables).

    Examples
    --------
    >>> from spark_ps.jobs.config import InputConf
    >>> input_version(spark, InputConf(path="data/a9a.libsvm.gz", format="libsvm")) is None
    True
    """
    if conf.format != "delta" or conf.path is None or not hadoop.exists(spark, conf.path):
        return None
    return delta_version(spark, conf.path)


def hasher_for(features: FeaturesConf) -> FieldHasher | None:
    """The :class:`~spark_ps.ml.feature.FieldHasher` of ``[features]``, or None when features are a vector column."""
    return FieldHasher(**features.hasher_params()) if features.hashed else None


def features_frame(frame: DataFrame, conf: InputConf, features: FeaturesConf, *, label: bool = True,
                   section: str = "input") -> DataFrame:
    """``frame`` with the label as ``label`` (double, thresholded if asked) and the features column built.

    Parameters
    ----------
    frame : DataFrame
        Rows from :func:`read_input`.
    conf, features : InputConf, FeaturesConf
        The job's ``[input]`` and ``[features]``.
    label : bool
        Whether the label is needed (train, evaluate) or optional (predict).

    Raises
    ------
    InputError
        A configured column is not in the schema, or the label is not numeric.

    Examples
    --------
    >>> from spark_ps.jobs.config import FeaturesConf, InputConf
    >>> raw = spark.createDataFrame([(1.0, "ad7")], "click double, ad string")
    >>> conf = InputConf(path="unused", label="click")
    >>> features_frame(raw, conf, FeaturesConf(hash=("ad",))).columns
    ['click', 'ad', 'label', 'features']
    >>> features_frame(raw, conf, FeaturesConf(hash=("ad", "country")))
    Traceback (most recent call last):
    ...
    spark_ps.jobs.inputs.InputError: [features] column 'country' is not in the input's schema: click double, ad string
    """
    schema = ", ".join(f"{f.name} {f.dataType.simpleString()}" for f in frame.schema.fields)
    hasher = hasher_for(features)
    wanted = [("features", c) for c in (hasher.inputColumns() if hasher else [features.column])]
    wanted += [(section, c) for c in conf.id]
    for table, column in wanted:
        if column not in frame.columns:
            raise InputError(f"[{table}] column {column!r} is not in the input's schema: {schema}")
    if conf.label in frame.columns:
        if not isinstance(frame.schema[conf.label].dataType, NumericType):
            raise InputError(f"[{section}] label = {conf.label!r} is {frame.schema[conf.label].dataType.simpleString()}"
                             ", not numeric")
        value = F.col(conf.label).cast("double")
        if conf.positive_above is not None:
            value = F.when(value > conf.positive_above, 1.0).when(value.isNotNull(), 0.0)
        frame = frame.withColumn("label", value)
    elif label:
        raise InputError(f"[{section}] label column {conf.label!r} is not in the input's schema: {schema}")
    return hasher.transform(frame) if hasher else frame
