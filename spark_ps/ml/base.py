"""Private bases of the public estimators, in the style of xgboost.spark.

A public estimator and its model share one Params class (as in
``pyspark.ml.classification``), which also says what they compute
(``_objective``). :class:`_PSEstimator` owns the whole fit; a public
estimator names its model class (:meth:`_PSEstimator._model_class`) and,
where it differs, how the shards initialise its rows (``_table_init``).
:class:`_PSModel` owns scoring, summaries and persistence; a public model
adds its output columns (``_output_columns``) and its typed accessors.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa
from pyspark.ml import Estimator, Model
from pyspark.ml.linalg import SparseVector, Vector
from pyspark.ml.util import DefaultParamsReader, DefaultParamsWriter, MLReadable, MLReader, MLWritable, MLWriter
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, StructField, StructType

from spark_ps.errors import UnavailableError
from spark_ps.ml import serving
from spark_ps.ml import weights as weight_store
from spark_ps.ml.csr import CSRBatch, record_batch_to_csr
from spark_ps.ml.fitting import fit_on_ps, require_columns
from spark_ps.ml.keycolumns import BIAS_KEY, KEY_SPACE, is_key_type
from spark_ps.ml.persistence import PSModelReader, PSModelWriter
from spark_ps.ml.summary import TrainingHistory
from spark_ps.ml.training import DataDependence, Schedule
from spark_ps.spark.deltalog import read_version
from spark_ps.wire.spec import TableSpec

log = logging.getLogger("spark_ps.ml")

_MARGIN_COL = "__spark_ps_margin"

#: Learning rates that work for hashed sparse CTR data with each optimizer.
DEFAULT_LEARNING_RATE = {"ftrl": 0.1, "adagrad": 0.1, "sgd": 0.01, "adam": 0.001}


def _reg_to_l1_l2(reg_param: float, elastic_net: float, num_rows: int) -> tuple[float, float]:
    """MLlib's penalty ``regParam * (a*|w|_1 + (1-a)/2*|w|^2)`` on the *mean* loss, as FTRL's per-coordinate
    l1/l2 on the *summed* loss: both scale by the number of training rows."""
    return reg_param * elastic_net * num_rows, reg_param * (1.0 - elastic_net) * num_rows


class _PSEstimator(Estimator, MLReadable, MLWritable):
    """Fit on the parameter server. A public estimator names its model class and
    its objective (in the Params class it shares with the model); the base does
    the rest, as in xgboost.spark."""

    _binary_labels = True
    #: Per-estimator overrides of :data:`DEFAULT_LEARNING_RATE`.
    _default_learning_rates: dict[str, float] = {}

    # --- hooks -------------------------------------------------------------
    @classmethod
    def _model_class(cls) -> type[_PSModel]:
        """The public model class this estimator fits."""
        raise NotImplementedError

    def _table_init(self) -> dict[str, Any]:
        """Initialiser of the model table's rows: ``init`` and ``init_params`` of its :class:`TableSpec`."""
        return {"init": "zeros", "init_params": {}}

    def _validate_params(self) -> None:
        """Refuse MLlib Param values we do not support (never ignore them silently)."""
        self._validate_ps_params()

    @staticmethod
    def _initial_intercept(label_mean: float | None) -> float:
        """Where training starts the intercept, given the (weighted) mean label (None: unknown).

        Starting it at the value the data implies with all coefficients at 0
        spares the coefficients from absorbing the intercept while it is still
        far off. Subclasses that know that value for their loss return it.
        """
        return 0.0

    # --- shared machinery --------------------------------------------------
    def _learning_rate(self) -> float:
        """``alpha`` if set; else ``stepSize`` if the user set it; else the optimizer's default.

        MLlib's own ``stepSize`` default (1.0 for FM) is tuned for its solver,
        not for a per-coordinate online optimizer, so it is only honoured when
        set explicitly.
        """
        if self.isSet(self.alpha):
            return self.getAlpha()
        if self.hasParam("stepSize") and self.isSet(self.getParam("stepSize")):
            return self.getOrDefault("stepSize")
        return {**DEFAULT_LEARNING_RATE, **self._default_learning_rates}[self.getOptimizer()]

    def _hyper(self) -> dict[str, float]:
        """The optimizer's hyper-parameters, before the row-scaled penalty of :meth:`_data_dependence`."""
        lr = self._learning_rate()
        if self.getOptimizer() == "ftrl":  # priorL1 scales with the passes: see _data_dependence
            return {"alpha": lr, "beta": self.getBeta(), "l1": 0.0, "l2": 0.0}
        return {"lr": lr}

    def _data_dependence(self) -> DataDependence:
        """regParam's L1/L2 per training row and priorL1 per pass (FTRL only), and where the intercept starts."""
        ftrl = self.getOptimizer() == "ftrl"
        l1, l2 = _reg_to_l1_l2(self.getRegParam(), self._elastic_net(), 1) if ftrl else (0.0, 0.0)
        start = type(self)._initial_intercept if self.getFitIntercept() else None
        return DataDependence(l1_per_row=l1, l2_per_row=l2, l1_per_pass=self.getPriorL1() if ftrl else 0.0,
                              intercept_start=start)

    def _elastic_net(self) -> float:
        return self.getElasticNetParam() if self.hasParam("elasticNetParam") else 0.0

    def _table_spec(self) -> TableSpec:
        """The model table's spec; the fit names it and adds the row-scaled penalty and the intercept."""
        return TableSpec("model", width=self._objective().width, optimizer=self.getOptimizer(),
                         hyper=self._hyper(), **self._table_init())

    def _schedule(self) -> Schedule:
        """Mini-batch size and passes: at most ``numEpochs`` (0: chosen from the rows) and ``maxIter``, fewer
        once a pass improves the loss by less than ``tol``."""
        return Schedule(self.getBatchSize(), self.getNumEpochs(), max(1, self.getMaxIter()), self.getTol())

    def _fit(self, dataset: DataFrame) -> _PSModel:
        self._validate_params()
        spark = dataset.sparkSession
        weight_col = self._weight_col()
        require_columns(dataset, features=self.getFeaturesCol(), label=self.getLabelCol(), weight=weight_col)
        # The intercept row starts at 0 like every row: the starting point (from the mean
        # label) rides along as the objective's margin offset, and is added back to the
        # fitted intercept. The tasks count the rows and labels it and the penalty need.
        fit = fit_on_ps(
            spark, dataset, label=f"{type(self).__name__}[{self.uid}]", objective=self._objective(),
            table_spec=self._table_spec(), data_dependence=self._data_dependence(),
            features_col=self.getFeaturesCol(),
            label_col=self.getLabelCol(), weight_col=weight_col,
            fit_intercept=self.getFitIntercept(), schedule=self._schedule(),
            sync_mode=self.getSyncMode(), staleness=self.getStaleness(), num_workers=self.getNumWorkers(),
            timeout=self.getPsTimeout(), checkpoint_dir=self.getOrDefault("checkpointDir")
            if self.isDefined(self.checkpointDir) else None, binary_labels=self._binary_labels, uid=self.uid)
        key_space = is_key_type(dataset.schema[self.getFeaturesCol()].dataType)
        model = self._model_class()(fit.weights_path, fit.intercept, fit.num_rows, history=fit.history,
                                    table=fit.table, num_features=KEY_SPACE if key_space else fit.num_features)
        model._export = fit.export
        model._lease = fit.lease
        model._resetUid(self.uid)
        model._training_data = dataset  # for model.summary, evaluated lazily on the executors
        return self._copyValues(model)

    def write(self) -> MLWriter:
        return DefaultParamsWriter(self)

    @classmethod
    def read(cls) -> MLReader:
        return DefaultParamsReader(cls)


class _PSModel(Model, MLReadable, MLWritable):
    """A fitted model whose weights live in Delta (and, while training's shards live, on them)."""

    #: The summary class, and the Param naming the score column its metrics read.
    _summary_class: type[TrainingHistory] = TrainingHistory
    _summary_score_param = "predictionCol"

    def __init__(self, weights_path: str | None = None, intercept: float = 0.0, num_rows: int = 0,
                 nnz: int = 0, history: TrainingHistory | None = None, table: str | None = None,
                 num_features: int | None = None):
        super().__init__()
        self._weights_path = weights_path
        self._intercept = float(intercept)
        self._num_rows = num_rows
        self._nnz = nnz
        self._history = history or TrainingHistory([])
        self._table = table  # live shard table to score from: the training table, or one loaded from Delta
        self._lease = None  # holds self._table on the shards (spark_ps.ml.serving); shared with copies
        self._num_features = num_features
        self._training_data = None  # set by fit, for the lazily evaluated training summary
        self._export = None  # set by fit: the Delta export of the weights, until it has been waited for
        #: Weights as a DataFrame rather than the Delta table at weights_path (a version of an online model).
        self._weights_source: DataFrame | None = None

    def _await_weights(self) -> None:
        """Wait for the fit's background Delta export, if any, and take its row count.

        Raises the export's error if it failed: the weights are then only on
        the shards (still usable for scoring while they live), not in Delta.
        """
        export = self._export
        if export is not None:
            self._nnz = export.result()
            self._export = None

    @property
    def numFeatures(self) -> int:
        """Size of the training feature vectors; -1 (:data:`~spark_ps.ml.keycolumns.KEY_SPACE`) for 64-bit keys.

        A model fitted on a column of 64-bit keys (:mod:`spark_ps.ml.keycolumns`)
        has no vector size, so ``coefficients`` and FM ``factors`` raise; read
        its weights by key with :meth:`weightsOf`.
        """
        return int(self._num_features or 0)

    # --- hooks -------------------------------------------------------------
    def _output_columns(self, scored: DataFrame) -> DataFrame:
        """Turn the raw margin column into the model's public output columns."""
        raise NotImplementedError

    # --- facts -------------------------------------------------------------
    @property
    def intercept(self) -> float:
        return self._intercept

    @property
    def weightsPath(self) -> str:
        """Delta table holding the sparse weights (``key, value``); waits for a fit's export to finish."""
        self._await_weights()
        return self._weights_path

    @property
    def numNonZeros(self) -> int:
        self._await_weights()
        return self._nnz

    def _weights_frame(self) -> DataFrame:
        """The model's rows (``key, value`` and the optimizer's ``state_*`` columns, if kept), read on the executors.

        The one source of every accessor; they read ``key`` and ``value`` only.
        """
        if self._weights_source is not None:
            return self._weights_source
        return read_version(SparkSession.active(), self.weightsPath)

    def _sparse_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """All non-zero feature rows (not the intercept's). O(nnz) on the driver: only for explicit accessors."""
        table = (self._weights_frame().where(F.col("key") != F.lit(BIAS_KEY))
                 .select("key", "value").orderBy("key").toArrow())
        keys = table.column("key").to_numpy()
        values = table.column("value").combine_chunks()
        width = self._objective().width
        return keys, values.flatten().to_numpy(zero_copy_only=False).reshape(-1, width).astype(np.float64)

    def _vector_size(self, keys: np.ndarray) -> int:
        """Size of a vector over the model's features: the training vectors', or past the largest stored key."""
        if self.numFeatures == KEY_SPACE:
            raise ValueError(f"{type(self).__name__} was fitted on 64-bit keys (numFeatures = {KEY_SPACE}): its "
                             "weights have no vector form; read them by key with weightsOf(keys)")
        return max(self.numFeatures, int(keys.max()) + 1 if len(keys) else 0)

    def _linear_weights(self) -> SparseVector:
        """The first column of every stored row, as MLlib's ``coefficients`` (or FM's ``linear``)."""
        keys, values = self._sparse_rows()
        # A stored row may have non-zero factors and a linear weight that L1 holds at exactly 0.
        nonzero = values[:, 0] != 0.0
        return SparseVector(self._vector_size(keys), keys[nonzero].astype(np.int32), values[nonzero, 0])

    def weightsOf(self, keys) -> np.ndarray:
        """The stored rows of the given feature keys, read on the executors (0 for a key never learned).

        Works for every model, and is the one way to read a model fitted on
        64-bit keys, whose weights have no vector form.

        Parameters
        ----------
        keys : sequence of int
            Feature keys (vector indices, or 64-bit keys); a handful, as each is collected to the driver.

        Returns
        -------
        ndarray of float64, shape (len(keys), width)
            Column 0 is the linear weight; an FM's factors follow.

        Examples
        --------
        >>> from spark_ps.ml.classification import LogisticRegression
        >>> train = spark.createDataFrame([([2**40], 1.0), ([-3], 0.0)] * 1000, "features array<bigint>, label double")
        >>> model = LogisticRegression().fit(train)
        >>> w = model.weightsOf([2**40, -3, 7])
        >>> w.shape, bool(w[0, 0] > 0 > w[1, 0]), float(w[2, 0])
        ((3, 1), True, 0.0)
        """
        keys = [int(k) for k in keys]
        width = self._objective().width
        rows = weight_store.read_rows(SparkSession.active(), self._weights_frame(), keys) if keys else {}
        return np.array([rows.get(k, [0.0] * width) for k in keys], dtype=np.float64).reshape(len(keys), width)

    def _margin_of(self, value: Vector) -> float:
        """Margin of one feature vector, reading only its features' rows from Delta."""
        if isinstance(value, SparseVector):
            idx, vals = np.asarray(value.indices, np.int64), np.asarray(value.values, np.float64)
        else:
            dense = value.toArray()
            idx = np.flatnonzero(dense)
            vals = dense[idx]
        if not np.all(np.isfinite(vals)):
            raise ValueError("feature vector has NaN or infinite values")
        spark = SparkSession.active()
        rows = weight_store.read_rows(spark, self._weights_frame(), idx.tolist()) if len(idx) else {}
        objective = self._objective()
        pulled = np.array([rows.get(int(k), [0.0] * objective.width) for k in idx],
                          dtype=np.float32).reshape(-1, objective.width)
        batch = CSRBatch(np.array([0, len(idx)]), np.arange(len(idx), dtype=np.int64), vals, np.zeros(1), None)
        bias = self.intercept if self.getFitIntercept() else 0.0
        return float(objective.margins(batch, np.arange(len(idx)), pulled, bias)[0])

    # --- summaries -----------------------------------------------------------
    def _summary_of(self, dataset: DataFrame) -> TrainingHistory:
        """Metrics of this model on ``dataset``; scores into a temporary column when the user's is "".

        As MLlib's ``findSummaryModel``.
        """
        model = self
        param = self.getParam(self._summary_score_param)
        if not self.getOrDefault(param):
            model = self.copy()
            model._set(**{param.name: f"{param.name}_{self.uid}"})
        return self._summary_class(model.transform(dataset), self._history, model.getOrDefault(param.name),
                                   self.getLabelCol(), self._weight_col())

    def evaluate(self, dataset: DataFrame) -> TrainingHistory:
        """Metrics of this model on ``dataset``, computed on the executors.

        Parameters
        ----------
        dataset : pyspark.sql.DataFrame
            Rows with the model's features and label columns (and weight column, if set).
        """
        return self._summary_of(dataset)

    def _training_summary(self) -> TrainingHistory:
        if self._training_data is None:
            raise UnavailableError(f"no training summary available for this {type(self).__name__}: it was "
                                   "loaded, not fitted; use evaluate(df)")
        return self._summary_of(self._training_data)

    @property
    def summary(self) -> TrainingHistory:
        """Training summary: ``objectiveHistory``, ``totalIterations``, ``epochSeconds`` and metrics on the
        training data."""
        return self._training_summary()

    @property
    def hasSummary(self) -> bool:
        """Whether :attr:`summary` is available (the model was fitted in this session, not loaded)."""
        return self._training_data is not None

    # --- scoring -----------------------------------------------------------
    def _ensure_live_table(self, spark: SparkSession):
        """A client and table name to pull weights from (:func:`spark_ps.ml.serving.live_table`)."""
        return serving.live_table(self, spark)

    def _row_source(self, spark: SparkSession):
        """How tasks get weight rows (:func:`spark_ps.ml.serving.row_source`)."""
        return serving.row_source(self, spark)

    def release(self) -> None:
        """Drop this model's table on the shards now, for it and its copies; it then scores from its Delta weights.

        Otherwise the table goes once the model, its copies and the DataFrames
        its ``transform`` returned are all garbage-collected
        (:mod:`spark_ps.ml.serving`).

        Examples
        --------
        >>> from spark_ps.ml.classification import LogisticRegression
        >>> train = spark.createDataFrame([([1], 1.0), ([2], 0.0)] * 50, "features array<bigint>, label double")
        >>> model = LogisticRegression().fit(train); model.release()
        >>> model.transform(train).where("prediction = label").count()     # scores from Delta now
        100
        """
        serving.release(self)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        features_col = self.getFeaturesCol()
        require_columns(dataset, features=features_col)
        client, source = self._row_source(dataset.sparkSession)
        bias = self._intercept if self.getFitIntercept() else 0.0

        def lookup(keys: np.ndarray) -> np.ndarray:
            if client is not None:
                return client.pull(source, keys)
            stored_keys, stored_rows = source.value
            pos = np.minimum(np.searchsorted(stored_keys, keys), max(len(stored_keys) - 1, 0))
            found = (stored_keys[pos] == keys) if len(stored_keys) else np.zeros(len(keys), bool)
            return np.where(found[:, None], stored_rows[pos] if len(stored_keys) else 0.0,
                            np.float32(0.0)).astype(np.float32)

        scored = self._score_with(dataset, lookup, bias, None if client is None else client.close)
        scored._ps_lease = self._lease  # its tasks read the table when they run: it holds the table until then
        return scored

    def _score_with(self, dataset: DataFrame, lookup, bias: float, close=None) -> DataFrame:
        """``dataset`` with the model's output columns; tasks read rows with ``lookup(keys)``, then ``close()``.

        The one scoring loop: batch models (shards or a broadcast table) and
        live streaming scoring (a per-batch shard table) differ only in ``lookup``.
        """
        features_col = self.getFeaturesCol()
        objective = self._objective()

        def score(batches):
            offset = 0
            try:
                for batch in batches:
                    csr = record_batch_to_csr(batch, features_col, row_offset=offset)
                    offset += batch.num_rows
                    keys, col = objective.keys_of(csr, fit_intercept=False)
                    margin = objective.margins(csr, col, lookup(keys), bias)
                    yield batch.append_column(_MARGIN_COL, pa.array(margin, pa.float64()))
            finally:
                if close is not None:
                    close()

        schema = StructType(dataset.schema.fields + [StructField(_MARGIN_COL, DoubleType(), False)])
        return self._output_columns(dataset.mapInArrow(score, schema)).drop(_MARGIN_COL)

    # --- persistence ---------------------------------------------------------
    def _extra_metadata(self) -> dict[str, Any]:
        return {"intercept": self._intercept, "numRows": self._num_rows, "nnz": self.numNonZeros,
                **self._history.to_metadata(), "numFeatures": self.numFeatures, "weightsFormat": "delta:key,value"}

    def _restore(self, metadata: dict[str, Any], weights_path: str, weights: DataFrame | None = None) -> None:
        """Set the loaded state: ``weights`` (key, value rows) if given, else the Delta table at ``weights_path``."""
        self._weights_path = weights_path
        self._weights_source = weights
        self._intercept = float(metadata["intercept"])
        self._num_rows = int(metadata["numRows"])
        self._nnz = int(metadata["nnz"])
        self._history = TrainingHistory.from_metadata(metadata)
        self._num_features = metadata.get("numFeatures")
        self._table = None
        self._lease = None
        self._training_data = None
        self._export = None

    def write(self) -> MLWriter:
        return PSModelWriter(self)

    @classmethod
    def read(cls) -> MLReader:
        return PSModelReader(cls)

    @classmethod
    def load(cls, path: str, version: int | None = None, timestamp=None):
        """Load the model saved at ``path``: its newest version, or an earlier one.

        Parameters
        ----------
        path : str
            A model directory written by ``save`` or by a streaming trainer.
        version : int, optional
            A version :meth:`history` lists: a save of a batch model (a Delta
            version of its weights, whose commit holds its Params and
            intercept), or a committed micro-batch of an online model.
        timestamp : str or datetime, optional
            The newest version saved at or before this time (Delta's ``timestampAsOf`` rule).
        """
        return PSModelReader(cls, version=version, timestamp=timestamp).load(path)

    @classmethod
    def history(cls, path: str):
        """The versions of the model at ``path``, oldest first (:func:`spark_ps.ml.versions.history`).

        Examples
        --------
        >>> import os, tempfile
        >>> from spark_ps.ml.regression import LinearRegressionModel
        >>> weights = os.path.join(tempfile.mkdtemp(), "w")
        >>> spark.createDataFrame([(3, [0.5])], "key long, value array<float>").write.format("delta").save(weights)
        >>> path = os.path.join(tempfile.mkdtemp(), "lin")
        >>> LinearRegressionModel(weights, 1.5, 10).save(path)
        >>> [(r.version, r.rows) for r in LinearRegressionModel.history(path).collect()]
        [(0, 10)]
        """
        from spark_ps.ml.versions import history

        return history(path)

