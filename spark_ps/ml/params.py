"""Params that spark-ps estimators add on top of pyspark.ml's own.

Each estimator inherits pyspark.ml's private ``_XxxParams`` class of the same
name, so every MLlib Param exists with the same name, type, default, getter
and setter. The mixins here add the parameter-server knobs, in the same
``Has*`` style as :mod:`pyspark.ml.param.shared`.
"""

from __future__ import annotations

from pyspark.ml.param import Param, Params, TypeConverters

from spark_ps.wire.spec import TRAINING_OPTIMIZERS

SYNC_MODES = ("bsp", "ssp", "asp")


#: MLlib's ``ParamValidators`` for the MLlib Params our estimators share: (name, rule, check).
_MLLIB_RANGES = (
    ("maxIter", ">= 0", lambda v: v >= 0),
    ("regParam", ">= 0", lambda v: v >= 0),
    ("elasticNetParam", "in [0, 1]", lambda v: 0 <= v <= 1),
    ("tol", ">= 0", lambda v: v >= 0),
    ("threshold", "in [0, 1]", lambda v: 0 <= v <= 1),
    ("aggregationDepth", ">= 2", lambda v: v >= 2),
    ("maxBlockSizeInMB", ">= 0", lambda v: v >= 0),
    ("stepSize", "> 0", lambda v: v > 0),
    ("factorSize", "> 0", lambda v: v > 0),
    ("initStd", ">= 0", lambda v: v >= 0),
    ("miniBatchFraction", "in (0, 1]", lambda v: 0 < v <= 1),
    ("epsilon", "> 1", lambda v: v > 1),
)


class HasOptimizer(Params):
    optimizer: Param[str] = Param(
        Params._dummy(), "optimizer",
        "server-side update rule: ftrl, adagrad, sgd or adam",
        typeConverter=TypeConverters.toString)

    def getOptimizer(self) -> str:
        return self.getOrDefault(self.optimizer)


class HasAlpha(Params):
    alpha: Param[float] = Param(
        Params._dummy(), "alpha",
        "learning rate of the optimizer (FTRL alpha); when unset, stepSize is used",
        typeConverter=TypeConverters.toFloat)

    def getAlpha(self) -> float:
        return self.getOrDefault(self.alpha)


class HasBeta(Params):
    beta: Param[float] = Param(
        Params._dummy(), "beta", "FTRL beta (smoothing of the per-coordinate learning rate), >= 0",
        typeConverter=TypeConverters.toFloat)

    def getBeta(self) -> float:
        return self.getOrDefault(self.beta)


class HasPriorL1(Params):
    priorL1: Param[float] = Param(
        Params._dummy(), "priorL1",
        "FTRL only: L1 strength per pass on the summed loss, independent of the row count and added to "
        "regParam's; a weight stays exactly 0 until its feature's net gradient exceeds it, >= 0",
        typeConverter=TypeConverters.toFloat)

    def getPriorL1(self) -> float:
        return self.getOrDefault(self.priorL1)


class HasBatchSize(Params):
    batchSize: Param[int] = Param(
        Params._dummy(), "batchSize",
        "rows per mini-batch (one pull and one push each), >= 1; 0 = chosen from the rows per worker",
        typeConverter=TypeConverters.toInt)

    def getBatchSize(self) -> int:
        return self.getOrDefault(self.batchSize)


class HasNumEpochs(Params):
    numEpochs: Param[int] = Param(
        Params._dummy(), "numEpochs",
        "most passes over the training data (capped by maxIter; fewer once a pass improves the loss by "
        "less than tol), >= 0; 0 = chosen from the rows",
        typeConverter=TypeConverters.toInt)

    def getNumEpochs(self) -> int:
        return self.getOrDefault(self.numEpochs)


class HasSyncMode(Params):
    syncMode: Param[str] = Param(
        Params._dummy(), "syncMode",
        "consistency between workers: bsp (lock-step), ssp (bounded staleness) or asp (none)",
        typeConverter=TypeConverters.toString)
    staleness: Param[int] = Param(
        Params._dummy(), "staleness", "max clocks a worker may run ahead of the slowest under ssp, >= 0",
        typeConverter=TypeConverters.toInt)

    def getSyncMode(self) -> str:
        return self.getOrDefault(self.syncMode)

    def getStaleness(self) -> int:
        return self.getOrDefault(self.staleness)


class HasShardOptions(Params):
    numWorkers: Param[int] = Param(
        Params._dummy(), "numWorkers",
        "training tasks (0 = one per task slot); all run at once as a barrier stage",
        typeConverter=TypeConverters.toInt)
    psTimeout: Param[float] = Param(
        Params._dummy(), "psTimeout", "seconds to wait for a shard reply or a clock before failing",
        typeConverter=TypeConverters.toFloat)
    checkpointDir: Param[str] = Param(
        Params._dummy(), "checkpointDir",
        "Delta root for fitted weights (default: spark.ps.checkpointDir, else <warehouse>/spark_ps)",
        typeConverter=TypeConverters.toString)

    def getNumWorkers(self) -> int:
        return self.getOrDefault(self.numWorkers)

    def getPsTimeout(self) -> float:
        return self.getOrDefault(self.psTimeout)

    def getCheckpointDir(self) -> str:
        return self.getOrDefault(self.checkpointDir)


class _PSTrainingParams(HasOptimizer, HasAlpha, HasBeta, HasPriorL1, HasBatchSize, HasNumEpochs, HasSyncMode,
                        HasShardOptions):
    """All parameter-server Params, with their defaults (an estimator may override ``priorL1``'s)."""

    def __init__(self, *args):
        super().__init__(*args)
        self._setDefault(optimizer="ftrl", beta=1.0, priorL1=0.0, batchSize=256, numEpochs=5, syncMode="ssp",
                         staleness=4, numWorkers=0, psTimeout=600.0)

    # Setters live here once for every estimator; each returns self (pyspark style).
    def setOptimizer(self, value: str):
        return self._set(optimizer=value)

    def setAlpha(self, value: float):
        return self._set(alpha=value)

    def setBeta(self, value: float):
        return self._set(beta=value)

    def setPriorL1(self, value: float):
        return self._set(priorL1=value)

    def setBatchSize(self, value: int):
        return self._set(batchSize=value)

    def setNumEpochs(self, value: int):
        return self._set(numEpochs=value)

    def setSyncMode(self, value: str):
        return self._set(syncMode=value)

    def setStaleness(self, value: int):
        return self._set(staleness=value)

    def setNumWorkers(self, value: int):
        return self._set(numWorkers=value)

    def setPsTimeout(self, value: float):
        return self._set(psTimeout=value)

    def setCheckpointDir(self, value: str):
        return self._set(checkpointDir=value)

    def _weight_col(self) -> str | None:
        """The weight column's name, or None when unset or empty (MLlib treats both as unweighted)."""
        return self.getWeightCol() if self.isDefined(self.weightCol) and self.getWeightCol() else None

    def _validate_mllib_params(self) -> None:
        """Raise ``ValueError`` naming the first MLlib Param outside the range MLlib's own validators allow.

        MLlib checks these on the JVM side when it fits; without a JVM
        estimator we check them here, so a value MLlib refuses is never
        silently trained with (a negative ``regParam`` would flip the penalty).
        Only Params this instance has are checked.
        """
        for name, rule, ok in _MLLIB_RANGES:
            if self.hasParam(name) and self.isDefined(name):
                value = self.getOrDefault(name)
                if value is not None and not ok(value):
                    raise ValueError(f"{name} must be {rule} (as in pyspark.ml), got {value!r}")

    def _validate_ps_params(self) -> None:
        """Raise ``ValueError`` naming the first invalid Param: MLlib's ranges first, then the PS knobs."""
        self._validate_mllib_params()
        if self.getOptimizer() not in TRAINING_OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {TRAINING_OPTIMIZERS}, got {self.getOptimizer()!r}")
        if self.getSyncMode() not in SYNC_MODES:
            raise ValueError(f"syncMode must be one of {SYNC_MODES}, got {self.getSyncMode()!r}")
        # batchSize's rule is the Schedule's (spark_ps.ml.training), checked when the fit builds it.
        checks = [("numEpochs", self.getNumEpochs() >= 0),
                  ("staleness", self.getStaleness() >= 0), ("beta", self.getBeta() >= 0),
                  ("priorL1", self.getPriorL1() >= 0),
                  ("numWorkers", self.getNumWorkers() >= 0), ("psTimeout", self.getPsTimeout() > 0)]
        if self.isDefined(self.alpha):
            checks.append(("alpha", self.getAlpha() > 0))
        for name, ok in checks:
            if not ok:
                raise ValueError(f"invalid value for {name}: {self.getOrDefault(name)!r}")


class _SharedSetters:
    """Setters of MLlib's shared Params, each returning ``self`` like pyspark.ml's own.

    pyspark declares these on every public estimator; declaring them once here
    keeps our thin public classes thin. A setter only exists on a class that
    has the Param (``_set`` raises otherwise).
    """

    def setFeaturesCol(self, value: str):
        return self._set(featuresCol=value)

    def setLabelCol(self, value: str):
        return self._set(labelCol=value)

    def setPredictionCol(self, value: str):
        return self._set(predictionCol=value)

    def setProbabilityCol(self, value: str):
        return self._set(probabilityCol=value)

    def setRawPredictionCol(self, value: str):
        return self._set(rawPredictionCol=value)

    def setWeightCol(self, value: str):
        return self._set(weightCol=value)

    def setMaxIter(self, value: int):
        return self._set(maxIter=value)

    def setRegParam(self, value: float):
        return self._set(regParam=value)

    def setElasticNetParam(self, value: float):
        return self._set(elasticNetParam=value)

    def setTol(self, value: float):
        return self._set(tol=value)

    def setFitIntercept(self, value: bool):
        return self._set(fitIntercept=value)

    def setStandardization(self, value: bool):
        return self._set(standardization=value)

    def setAggregationDepth(self, value: int):
        return self._set(aggregationDepth=value)

    def setMaxBlockSizeInMB(self, value: float):
        return self._set(maxBlockSizeInMB=value)

    def setStepSize(self, value: float):
        return self._set(stepSize=value)

    def setSeed(self, value: int):
        return self._set(seed=value)

    def setSolver(self, value: str):
        return self._set(solver=value)
