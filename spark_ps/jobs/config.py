"""A batch job's settings: one TOML file (stdlib ``tomllib``), any key overridden on the command line.

Decisions:

- **One frozen dataclass per TOML table** (``[input]``, ``[features]``,
  ``[model]``, ``[output]``, ``[evaluation]``), validated once, in
  :func:`load_config`, before Spark starts: a typo'd key, a wrong type or an
  unknown format fails in a second with a line naming the key, instead of
  after a cluster spun up. Unknown keys are errors, not ignored: a misspelt
  ``regParm`` silently training with the default is the failure this prevents.
- **Overrides are dotted keys** (``--model.params.regParam=1e-4``,
  ``--input.path data/day2``), their values parsed as TOML values (so
  ``1e-4`` is a float and ``["a", "b"]`` a list) and anything that does not
  parse taken as a string: every key of the file can be overridden, with no
  flag declared twice.
- Relative paths stay relative: they resolve against the job's working
  directory, as spark-submit's do.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ESTIMATORS", "FORMATS", "ConfigError", "FeaturesConf", "InputConf", "JobConf", "ModelConf",
           "OutputConf", "load_config", "parse_overrides"]

FORMATS = ("libsvm", "csv", "json", "parquet", "delta")
#: Estimator name in ``[model] estimator`` -> (module, class) of spark_ps.ml.
ESTIMATORS = {"LogisticRegression": ("spark_ps.ml.classification", "LogisticRegression"),
              "FMClassifier": ("spark_ps.ml.classification", "FMClassifier"),
              "LinearRegression": ("spark_ps.ml.regression", "LinearRegression")}


class ConfigError(ValueError):
    """A job's configuration is wrong; the message names the file or flag and the key."""


def _check(section: str, name: str, value: Any, kind: type | tuple[type, ...], what: str) -> None:
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool) and bool not in
                              (kind if isinstance(kind, tuple) else (kind,))):
        raise ConfigError(f"[{section}] {name} = {value!r}: expected {what}")


def _strings(section: str, name: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"[{section}] {name} = {value!r}: expected a list of column names")
    return tuple(value)


@dataclass(frozen=True)
class InputConf:
    """``[input]``: what a job reads. Exactly one of ``path`` and ``table``.

    ``id`` names the columns predict copies next to its scores;
    ``positive_above`` turns a numeric label into 0/1 (libsvm files label
    -1/+1); ``num_features`` is libsvm's vector size.
    """

    path: str | None = None
    table: str | None = None
    format: str = "parquet"
    options: Mapping[str, str] = field(default_factory=dict)
    schema: str | None = None
    label: str = "label"
    id: tuple[str, ...] = ()
    num_features: int | None = None
    positive_above: float | None = None

    def __post_init__(self) -> None:
        if (self.path is None) == (self.table is None):
            raise ConfigError("[input] needs exactly one of path = \"...\" and table = \"db.name\"")
        for name in ("path", "table", "schema", "label"):
            _check("input", name, getattr(self, name), str, "a string")
        if self.format not in FORMATS:
            raise ConfigError(f"[input] format = {self.format!r}: expected one of {', '.join(FORMATS)}")
        _check("input", "options", self.options, dict, "a table of reader options")
        object.__setattr__(self, "options", {str(k): str(v) for k, v in self.options.items()})
        object.__setattr__(self, "id", _strings("input", "id", list(self.id)))
        _check("input", "num_features", self.num_features, int, "an int (libsvm's numFeatures)")
        _check("input", "positive_above", self.positive_above, (int, float),
               "a number: labels above it become 1, the others 0 (e.g. 0 for -1/+1 labels)")


@dataclass(frozen=True)
class FeaturesConf:
    """``[features]``: raw columns to 64-bit keys (:class:`~spark_ps.ml.feature.FieldHasher`), or a vector column."""

    hash: tuple[str, ...] = ()
    buckets: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    crosses: tuple[tuple[str, str], ...] = ()
    column: str = "features"

    def __post_init__(self) -> None:
        for name in ("hash", "buckets", "numeric"):
            object.__setattr__(self, name, _strings("features", name, list(getattr(self, name))))
        crosses = []
        for pair in self.crosses:
            pair = _strings("features", "crosses", list(pair))
            if len(pair) != 2:
                raise ConfigError(f"[features] crosses: {list(pair)!r} is not a pair of column names")
            crosses.append(pair)
        object.__setattr__(self, "crosses", tuple(crosses))
        _check("features", "column", self.column, str, "a column name")

    @property
    def hashed(self) -> bool:
        """Whether raw columns are hashed (else ``column`` is read as it is)."""
        return bool(self.hash or self.buckets or self.numeric or self.crosses)

    #: This table's keys and the :class:`~spark_ps.ml.feature.FieldHasher` Params they stand for.
    _HASHER_PARAMS = (("hash", "hashCols"), ("buckets", "bucketCols"), ("numeric", "numericCols"),
                      ("crosses", "crosses"), ("column", "outputCol"))

    def hasher_params(self) -> dict[str, Any]:
        """The :class:`~spark_ps.ml.feature.FieldHasher` Params these settings stand for (JSON values).

        Examples
        --------
        >>> FeaturesConf(hash=("c0",), crosses=(("c0", "c1"),)).hasher_params()["crosses"]
        [['c0', 'c1']]
        """
        values = {"hash": list(self.hash), "buckets": list(self.buckets), "numeric": list(self.numeric),
                  "crosses": [list(p) for p in self.crosses], "column": self.column}
        return {param: values[key] for key, param in self._HASHER_PARAMS}

    @classmethod
    def from_hasher_params(cls, params: Mapping[str, Any]) -> FeaturesConf:
        """The settings that :meth:`hasher_params` turned into ``params`` (as a model version records them).

        Examples
        --------
        >>> conf = FeaturesConf(hash=("c0",), buckets=("i0",), crosses=(("c0", "c1"),))
        >>> FeaturesConf.from_hasher_params(conf.hasher_params()) == conf
        True
        """
        return cls(**{key: params[param] for key, param in cls._HASHER_PARAMS})


@dataclass(frozen=True)
class ModelConf:
    """``[model]``: the estimator, its Params, and the model's path (and, to read, its version)."""

    path: str
    estimator: str = "LogisticRegression"
    params: Mapping[str, Any] = field(default_factory=dict)
    version: int | None = None

    def __post_init__(self) -> None:
        _check("model", "path", self.path, str, "a string")
        if self.estimator not in ESTIMATORS:
            raise ConfigError(f"[model] estimator = {self.estimator!r}: expected one of {', '.join(ESTIMATORS)}")
        _check("model", "params", self.params, dict, "a table of Params")
        _check("model", "version", self.version, int, "a model version (an int; history() lists them)")


@dataclass(frozen=True)
class OutputConf:
    """``[output]``: where predict writes scores (Delta) and evaluate its report (JSON and PNG)."""

    path: str | None = None
    mode: str = "append"

    def __post_init__(self) -> None:
        _check("output", "path", self.path, str, "a string")
        if self.mode not in ("append", "overwrite"):
            raise ConfigError(f"[output] mode = {self.mode!r}: expected append or overwrite")


@dataclass(frozen=True)
class JobConf:
    """A whole job configuration; ``source`` names where it came from, for messages."""

    input: InputConf
    model: ModelConf
    features: FeaturesConf = field(default_factory=FeaturesConf)
    output: OutputConf = field(default_factory=OutputConf)
    test: InputConf | None = None
    source: str = "<config>"


_SECTIONS = {"input": InputConf, "test": InputConf, "features": FeaturesConf, "model": ModelConf,
             "output": OutputConf}


def parse_overrides(args: Sequence[str]) -> dict[str, Any]:
    """``--a.b=value`` / ``--a.b value`` flags as a nested dict; values parsed as TOML, else strings.

    Examples
    --------
    >>> parse_overrides(["--model.params.regParam=1e-4", "--input.path", "data/day2", "--features.hash=['c0']"])
    {'model': {'params': {'regParam': 0.0001}}, 'input': {'path': 'data/day2'}, 'features': {'hash': ['c0']}}
    >>> parse_overrides(["train.csv"])
    Traceback (most recent call last):
    ...
    spark_ps.jobs.config.ConfigError: command line: 'train.csv' is not a --section.key=value override
    """
    out: dict[str, Any] = {}
    items = list(args)
    while items:
        flag = items.pop(0)
        if not flag.startswith("--") or "." not in flag.split("=", 1)[0]:
            raise ConfigError(f"command line: {flag!r} is not a --section.key=value override")
        key, has_value, value = flag[2:].partition("=")
        if not has_value:
            if not items:
                raise ConfigError(f"command line: --{key} has no value")
            value = items.pop(0)
        try:
            parsed = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:  # not a TOML value: a bare string such as a path
            parsed = value
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = parsed
    return out


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = _merge(merged.get(key, {}), value) if isinstance(value, Mapping) and \
            isinstance(merged.get(key, {}), Mapping) else value
    return merged


def load_config(path: str | None, overrides: Sequence[str] = ()) -> JobConf:
    """Read a job's TOML file, apply ``--section.key=value`` overrides, validate everything once.

    Parameters
    ----------
    path : str or None
        The TOML file (``--config``); None: the overrides alone.
    overrides : sequence of str
        Command-line flags (see :func:`parse_overrides`).

    Raises
    ------
    ConfigError
        Naming the file and the key: a missing file, bad TOML, an unknown
        table or key, a wrong type, an unknown format or estimator.

    Examples
    --------
    >>> conf = load_config(None, ["--input.path=data/a9a", "--input.format=libsvm", "--model.path=w/lr",
    ...                           "--model.params.regParam=1e-5"])
    >>> conf.input.format, conf.model.estimator, dict(conf.model.params)
    ('libsvm', 'LogisticRegression', {'regParam': 1e-05})
    >>> load_config(None, ["--input.path=x", "--model.path=m", "--model.estimater=FM"])
    Traceback (most recent call last):
    ...
    spark_ps.jobs.config.ConfigError: <command line>: [model] has no key 'estimater' (keys: path, estimator, ...)
    """
    source = path or "<command line>"
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as handle:
                raw = tomllib.load(handle)
        except FileNotFoundError:
            raise ConfigError(f"config file {path!r} not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path!r}: {exc}") from None
    raw = _merge(raw, parse_overrides(overrides))
    sections = {}
    for name, values in raw.items():
        kind = _SECTIONS.get(name)
        if kind is None:
            raise ConfigError(f"{source}: unknown table [{name}] (tables: {', '.join(_SECTIONS)})")
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}: {name} must be a table, got {values!r}")
        known = [f.name for f in dataclasses.fields(kind)]
        for key in values:
            if key not in known:
                raise ConfigError(f"{source}: [{name}] has no key {key!r} (keys: {', '.join(known)})")
        missing = [f.name for f in dataclasses.fields(kind) if f.name not in values
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ConfigError(f"{source}: [{name}] needs {', '.join(missing)}")
        try:
            sections[name] = kind(**values)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    for required in ("input", "model"):
        if required not in sections:
            raise ConfigError(f"{source}: no [{required}] table")
    return JobConf(source=source, **sections)
