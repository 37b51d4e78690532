"""Structured Streaming online training on the parameter server (runs on the driver; tasks use ml's code).

``StreamingTrainer`` keeps a model fresh from a stream of labelled events,
with exactly-once updates fenced by Spark's ``batchId`` and the model's
truth (weights and optimizer state) in Delta (:mod:`spark_ps.ml.modelstore`).
"""

from spark_ps.streaming.scoring import Scorer, score_batch
from spark_ps.streaming.trainer import StreamingTrainer

__all__ = ["Scorer", "StreamingTrainer", "score_batch"]
