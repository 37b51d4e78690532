"""What the MLlib bench is asked to do: its options, a configuration for one child, a data set's paths.

The results of those requests are :mod:`bench.records`.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

from bench.records import FTRLSettings, Params, known_fields, params_from_dict, to_jsonable


@dataclasses.dataclass
class Options:
    """The MLlib bench's command line, parsed (see ``python -m bench.mllib --help``)."""

    dims: list[int]
    rows: int
    test_rows: int
    masters: list[str]
    mllib_all_masters: bool
    driver_memory: str
    max_iter: int
    ladder: list[int]
    reg_params: list[float]
    ps_epochs: list[int]
    ps_params: FTRLSettings
    ps_full_ladder: bool
    target_auc: float | None
    timeout: float
    budget_s: float | None
    ref_repeats: int
    seed: int
    out: pathlib.Path
    skip_mllib: bool
    skip_ps: bool
    reference: bool
    warmup_rows: int

    @property
    def primary(self) -> str:
        """The master MLlib runs on (the first of ``--masters``), whose MLlib results set the targets."""
        return self.masters[0]

    def runs_mllib(self, master: str) -> bool:
        """Whether MLlib runs on ``master``."""
        return not self.skip_mllib and (master == self.primary or self.mllib_all_masters)


@dataclasses.dataclass(frozen=True)
class DataPaths:
    """Train and test Parquet directories of one ``d``, and their format (``vector`` or ``keys``)."""

    format: str
    train: str
    test: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChildConfig:
    """Everything a ``--child`` process needs; written by the parent as ``config.json`` in the run directory.

    ``executor_memory`` is set for ``local-cluster`` masters only. Round trip:

    >>> from bench.records import PSParams
    >>> cfg = ChildConfig(name="n", system="spark-ps", params=PSParams(1, 0.0, 0.2, 1.0, 4096), format="vector",
    ...                   train="a", test="b", master="local[2]", driver_memory="4g", partitions=2,
    ...                   warehouse="w", result="r.json", warmup_rows=0)
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     cfg.write(pathlib.Path(tmp, "c.json"))
    ...     ChildConfig.read(pathlib.Path(tmp, "c.json")) == cfg
    True
    """

    name: str
    system: str
    params: Params
    format: str
    train: str
    test: str
    master: str
    driver_memory: str
    partitions: int
    warehouse: str
    result: str
    warmup_rows: int
    executor_memory: str | None = None

    def write(self, path: pathlib.Path) -> None:
        """Write as JSON to ``path``."""
        path.write_text(json.dumps(to_jsonable(self), indent=2))

    @classmethod
    def read(cls, path: str | pathlib.Path) -> ChildConfig:
        """Read from the JSON of :meth:`write`."""
        data = json.loads(pathlib.Path(path).read_text())
        return known_fields(cls, data, params=params_from_dict(data["system"], data["params"]))
