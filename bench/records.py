"""The MLlib bench's records: one dataclass per kind, and their JSON form.

``results.json`` is :meth:`Results.to_json`; its shape is the one the bench
wrote when every record was a ``dict`` (``dims`` keyed by ``str(log2 d)``,
the numpy reference under ``"numpy FTRL"``, a run's fields flat), so
``--report-only`` still reads a file from before the records were
dataclasses. Fields that are ``None`` are left out of the JSON and come
back as ``None``; keys a record does not know are ignored on reading.

Examples
--------
>>> run = RunRecord(system=PS, master="local[2]", d_log2=18, name="x",
...                 params=PSParams(1, 0.0, 0.2, 1.0, 4096), status=OK, fit_s=4.1, auc=0.81)
>>> run.params.label()
'epochs=1, reg=0, α=0.2, batch=4096'
>>> RunRecord.from_dict(run.to_dict()) == run
True
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, TypeVar

MLLIB, PS, REF = "MLlib", "spark-ps", "numpy FTRL"
OK, OOM, TIMEOUT, ERROR = "ok", "OOM", "timeout", "error"
NOT_RUN, SKIPPED, UNSUPPORTED = "not run", "skipped", "unsupported"
#: Statuses of a configuration that was launched and did not succeed.
FAILED = (OOM, TIMEOUT, ERROR, UNSUPPORTED)

T = TypeVar("T")


def to_jsonable(value: Any) -> Any:
    """``value`` as JSON-ready data: dataclasses as dicts without their ``None`` fields, keys as strings.

    Examples
    --------
    >>> to_jsonable({18: [MLlibParams(5, 1e-4, False)], "x": (1, None)})
    {'18': [{'maxIter': 5, 'regParam': 0.0001, 'standardization': False}], 'x': [1, None]}
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            if v is not None:
                out[f.name] = to_jsonable(v)
        return out
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


def known_fields(cls: type[T], data: dict[str, Any], **overrides: Any) -> T:
    """``cls(**data)`` with the keys ``cls`` does not have dropped and ``overrides`` applied.

    Examples
    --------
    >>> known_fields(FTRLSettings, {"alpha": 0.2, "beta": 1.0, "batchSize": 4096, "old": 1})
    FTRLSettings(alpha=0.2, beta=1.0, batchSize=4096)
    """
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{**{k: v for k, v in data.items() if k in names}, **overrides})


# --- parameters of one configuration ------------------------------------------

@dataclasses.dataclass(frozen=True)
class MLlibParams:
    """Knobs of one MLlib ``LogisticRegression`` fit (Spark's Param names)."""

    maxIter: int
    regParam: float
    standardization: bool

    def label(self) -> str:
        """Short label for tables, e.g. ``maxIter=40, reg=0.0001, std=F``."""
        return f"maxIter={self.maxIter}, reg={self.regParam:g}, std={'T' if self.standardization else 'F'}"


@dataclasses.dataclass(frozen=True)
class FTRLSettings:
    """FTRL settings shared by every spark-ps rung and the numpy reference (``--ps-alpha`` ...)."""

    alpha: float
    beta: float
    batchSize: int


@dataclasses.dataclass(frozen=True)
class PSParams:
    """Knobs of one spark-ps ``LogisticRegression`` fit (our estimator's Param names)."""

    numEpochs: int
    regParam: float
    alpha: float
    beta: float
    batchSize: int

    def label(self) -> str:
        """Short label for tables, e.g. ``epochs=2, reg=0, α=0.2``; a 0 is the estimator's default.

        >>> PSParams(0, 0.0, 0.0, 1.0, 0).label(), PSParams(2, 0.0, 0.2, 1.0, 4096).label()
        ('default Params', 'epochs=2, reg=0, α=0.2, batch=4096')
        """
        if not (self.numEpochs or self.regParam or self.alpha or self.batchSize):
            return "default Params"
        shown = [f"epochs={self.numEpochs or 'auto'}", f"reg={self.regParam:g}",
                 f"α={self.alpha:g}" if self.alpha else "α=default", f"batch={self.batchSize or 'auto'}"]
        return ", ".join(shown)


@dataclasses.dataclass(frozen=True)
class ReferenceParams:
    """The numpy FTRL reference: passes over the data."""

    epochs: int = 1

    def label(self) -> str:
        """Short label for tables."""
        return "1 pass" if self.epochs == 1 else f"{self.epochs} passes"


Params = MLlibParams | PSParams | ReferenceParams
PARAMS_OF = {MLLIB: MLlibParams, PS: PSParams, REF: ReferenceParams}


def params_from_dict(system: str, data: dict[str, Any]) -> Params:
    """The parameter record of ``system`` from its JSON form.

    Examples
    --------
    >>> params_from_dict(MLLIB, {"maxIter": 40, "regParam": 1e-5, "standardization": True}).label()
    'maxIter=40, reg=1e-05, std=T'
    """
    return known_fields(PARAMS_OF[system], data)


def params_items(params: Params) -> list[tuple[str, Any]]:
    """``(name, value)`` pairs of a parameter record, in field order (run names are built from them)."""
    return [(f.name, getattr(params, f.name)) for f in dataclasses.fields(params)]


# --- one configuration: what its child measured -----------------------------------

@dataclasses.dataclass(kw_only=True)
class ChildResult:
    """What one child process measured (written as ``result.json``); every measurement is optional.

    Times are seconds, memory MB (``VmHWM`` peaks), ``result_bytes`` the sum
    of the fit's stages' ``resultSize``; ``epoch_seconds`` and ``workers``
    come from our estimator's progress lines (spark-ps only), ``iterations``
    from MLlib's summary.
    """

    status: str = ERROR
    error: str | None = None
    app_id: str | None = None
    train_rows: int | None = None
    load_s: float | None = None
    warmup_s: float | None = None
    load_avg_before: float | None = None
    load_avg_after: float | None = None
    fit_s: float | None = None
    fit_cpu_s: float | None = None
    result_bytes: int | None = None
    fit_stages: int | None = None
    iterations: int | None = None
    epoch_seconds: list[float] = dataclasses.field(default_factory=list)
    epoch_rows_per_s: list[float] = dataclasses.field(default_factory=list)
    workers: int | None = None
    auc: float | None = None
    log_loss: float | None = None
    driver_jvm_peak_mb: float | None = None
    executor_side_peak_mb: float | None = None
    driver_python_peak_mb: float | None = None
    child_wall_s: float | None = None
    log_tail: str | None = None
    executor_log_tail: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``None`` fields left out)."""
        return to_jsonable(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChildResult:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        return known_fields(cls, data)


@dataclasses.dataclass(kw_only=True)
class RunRecord(ChildResult):
    """One configuration as the report sees it: which one, and what its child measured.

    ``log`` is the child's log file, ``wall_s`` the parent's wall time of the
    child (start-up and evaluation included).
    """

    system: str
    master: str
    d_log2: int
    name: str
    params: Params
    log: str | None = None
    wall_s: float | None = None

    @property
    def ok(self) -> bool:
        """Whether the run succeeded (so ``fit_s``, ``auc`` and ``log_loss`` are set)."""
        return self.status == OK

    def label(self) -> str:
        """The configuration's short label (see the ``label`` of the parameter records)."""
        return self.params.label()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        """Inverse of :meth:`to_dict` (also reads the numpy reference's records)."""
        if data.get("system") == REF:
            return ReferenceRun.from_dict(data)
        return known_fields(cls, data, params=params_from_dict(data["system"], data["params"]))


@dataclasses.dataclass(kw_only=True)
class ReferenceRun(RunRecord):
    """The single-process numpy FTRL: one pass, ``fit_s`` the median of ``fit_s_all``."""

    system: str = REF
    master: str = "1 process"
    params: Params = ReferenceParams()
    fit_s_all: list[float] = dataclasses.field(default_factory=list)
    rows_per_s: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReferenceRun:
        """Inverse of :meth:`to_dict`."""
        return known_fields(cls, data, params=params_from_dict(REF, data.get("params", {})))


# --- the matrix ------------------------------------------------------------------

@dataclasses.dataclass
class Cell:
    """One system at one ``(d, master)``: its roll-up status, best run, cheapest run reaching the target."""

    status: str
    best: RunRecord | None = None
    target_run: RunRecord | None = None
    oom_run: RunRecord | None = None
    note: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cell:
        """Inverse of ``to_jsonable``."""
        runs = {k: RunRecord.from_dict(data[k]) for k in ("best", "target_run", "oom_run") if data.get(k)}
        return known_fields(cls, data, **{k: runs.get(k) for k in ("best", "target_run", "oom_run")})


@dataclasses.dataclass
class DimResult:
    """Everything at one ``d``: the cells per master and system, the target AUC, the numpy reference."""

    masters: dict[str, dict[str, Cell]] = dataclasses.field(default_factory=dict)
    target_auc: float | None = None
    target_source: str | None = None
    reference: ReferenceRun | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form; the reference is stored under ``"numpy FTRL"``."""
        out = to_jsonable(dataclasses.replace(self, reference=None))
        if self.reference is not None:
            out[REF] = self.reference.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DimResult:
        """Inverse of :meth:`to_dict`."""
        masters = {m: {s: Cell.from_dict(c) for s, c in cells.items()} for m, cells in data.get("masters", {}).items()}
        ref = ReferenceRun.from_dict(data[REF]) if data.get(REF) else None
        return cls(masters, data.get("target_auc"), data.get("target_source"), ref)


@dataclasses.dataclass(kw_only=True)
class Meta:
    """How the bench ran: its options, the data's shape, the machine, when, and whether it completed.

    Keyword-only, and every field that may be ``None`` defaults to it: ``None``
    fields are left out of the JSON.
    """

    rows: int
    test_rows: int
    masters: list[str]
    primary: str
    mllib_all_masters: bool
    dims: list[int]
    driver_memory: str
    cores: int | None = None
    date: str
    started: str
    ladder: list[int]
    n_fields: int
    ctr: float
    max_iter: int
    reg_params: list[float]
    ps_epochs: list[int]
    ps_params: FTRLSettings
    ps_full_ladder: bool
    target_auc: float | None = None
    timeout: float
    budget_s: float | None = None
    seed: int
    skip_mllib: bool
    skip_ps: bool
    warmup_rows: int
    complete: bool = False
    wall_s: float = 0.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Meta:
        """Inverse of ``to_jsonable``."""
        return known_fields(cls, {"warmup_rows": 0, "started": "?", **data},
                            ps_params=known_fields(FTRLSettings, data["ps_params"]))


@dataclasses.dataclass
class Results:
    """The whole run: ``results.json``."""

    meta: Meta
    dims: dict[int, DimResult] = dataclasses.field(default_factory=dict)
    runs: list[RunRecord] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def dim(self, log2d: int) -> DimResult:
        """The record of ``d = 2**log2d``, created empty on first use."""
        return self.dims.setdefault(log2d, DimResult())

    def cell(self, log2d: int, master: str, system: str) -> Cell | None:
        """The cell of ``system`` at ``(d, master)``, or ``None`` if the bench never reached it."""
        per_d = self.dims.get(log2d)
        return None if per_d is None else per_d.masters.get(master, {}).get(system)

    def runs_of(self, log2d: int, master: str, system: str, ok_only: bool = True) -> list[RunRecord]:
        """Runs of ``system`` at ``(d, master)`` in launch order; the successful ones only by default."""
        return [r for r in self.runs if r.d_log2 == log2d and r.master == master and r.system == system
                and (r.ok or not ok_only)]

    def to_json(self) -> str:
        """``results.json``'s text."""
        data = {"meta": to_jsonable(self.meta), "dims": {str(d): v.to_dict() for d, v in self.dims.items()},
                "runs": [r.to_dict() for r in self.runs], "notes": list(self.notes)}
        return json.dumps(data, indent=1, default=str)

    @classmethod
    def from_json(cls, text: str) -> Results:
        """Inverse of :meth:`to_json` (reads the dict-era files too)."""
        data = json.loads(text)
        return cls(Meta.from_dict(data["meta"]), {int(d): DimResult.from_dict(v) for d, v in data["dims"].items()},
                   [RunRecord.from_dict(r) for r in data["runs"]], list(data.get("notes", [])))


# --- derived numbers ---------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Speedup:
    """MLlib's time to target over ours at one ``(d, master)``; ``ratio`` is ``None`` with ``why`` if unknown."""

    mllib_master: str
    ratio: float | None = None
    mllib_s: float | None = None
    ours_s: float | None = None
    why: str = ""


@dataclasses.dataclass(frozen=True)
class Throughput:
    """Our training rows/s per core at one ``(d, master)``, and the numpy FTRL's where it ran.

    ``per_core_epoch`` uses the median logged epoch time, ``per_core_fit``
    the fit wall time; ``fraction`` and ``fraction_fit`` are each over the
    reference's rows/s.
    """

    run: str
    workers: int
    epoch_s: float
    per_core_epoch: float
    per_core_fit: float
    ref: float | None = None
    fraction: float | None = None
    fraction_fit: float | None = None


@dataclasses.dataclass(frozen=True)
class CheckCell:
    """One target check on one master: ``MET``, ``MISSED`` or ``NOT RUN``, and the numbers behind it."""

    verdict: str
    text: str = ""


@dataclasses.dataclass(frozen=True)
class TargetCheck:
    """One of the issue's targets: what is checked, the threshold, and a :class:`CheckCell` per master."""

    check: str
    threshold: str
    cells: dict[str, CheckCell]
