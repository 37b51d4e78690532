"""``TableSpec``: what defines a table, validated once, carried as a request's metadata.

A table is defined by its name, its row width, its server-side update rule
with that rule's hyper-parameters, the initialiser of rows never pushed,
an optional key range and the keys exempt from L1/L2 (an intercept). Every
layer used to pass these as a plain dict, built in the estimator, extended
twice in training and normalised again on the shard; equal tables could
then differ by a missing default. Now the estimator, the context, the client
and the shard all hold the same frozen :class:`TableSpec`:

* it is validated in ``__post_init__``, so an invalid spec cannot exist;
* it crosses the wire as JSON (:meth:`TableSpec.to_meta`,
  :meth:`TableSpec.from_meta`) and comes out equal on the other side, which
  is how a shard tells "create again" (a no-op) from "create differently"
  (an error);
* changes make a new spec (:meth:`TableSpec.with_hyper`,
  :func:`dataclasses.replace`), validated again.

The update rules themselves, and the checks of their hyper-parameters'
values, live with the rules on the server (``spark_ps.server.optim``); this
module names them, once, for everyone (:data:`OPTIMIZERS`).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["INITIALIZERS", "OPTIMIZERS", "STATE_NAMES", "TRAINING_OPTIMIZERS", "TableSpec"]

#: Every update rule a table can have, with the state it keeps per row beside (or instead of) the
#: weights: what an export carries as ``state_<name>`` columns and a checkpoint must keep. The
#: rules themselves (``spark_ps.server.optim``) take their state names from here.
STATE_NAMES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "delta": (), "sgd": (), "adagrad": ("n",), "ftrl": ("z", "n"), "adam": ("m", "v", "t")})
#: Update rules an estimator can train with (``optimizer`` Param); ``delta`` adds pushed values
#: (statistics, counters, serving tables).
TRAINING_OPTIMIZERS = ("ftrl", "adagrad", "sgd", "adam")
OPTIMIZERS = tuple(STATE_NAMES)
#: Initialisers of rows never pushed.
INITIALIZERS = ("zeros", "normal")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _real_mapping(value: Any, what: str, table: str) -> Mapping[str, float]:
    if not isinstance(value, Mapping):
        raise ValueError(f"table {table!r}: {what} must be a mapping of names to numbers, got {value!r}")
    out = {}
    for key, v in value.items():
        if not isinstance(key, str) or isinstance(v, bool) or not isinstance(v, numbers.Real) \
                or not math.isfinite(v):
            raise ValueError(f"table {table!r}: {what} {key!r} must be a finite number, got {v!r}")
        out[key] = int(v) if _is_int(v) else float(v)
    return MappingProxyType(dict(sorted(out.items())))


@dataclass(frozen=True)
class TableSpec:
    """The definition of one sparse table, identical on every shard.

    Parameters
    ----------
    name : str
        Table name, unique per application.
    width : int
        float32 values per row: 1 for a linear model, 1 + k for an FM.
    optimizer : str
        Update rule the shards apply to pushed values (:data:`OPTIMIZERS`).
    hyper : mapping of str to float
        The rule's hyper-parameters (``alpha``, ``beta``, ``l1``, ``l2``, ``lr``, ...);
        omitted ones take the rule's defaults.
    init : str
        Value of a row never pushed: ``zeros``, or ``normal`` (a seeded
        N(0, sigma) draw per key and column).
    init_params : mapping of str to float
        The initialiser's parameters (``sigma``, ``seed``).
    dim : int, optional
        If set, keys must lie in ``[0, dim)``. Memory never depends on it.
    unpenalised_keys : tuple of int
        Keys updated without the rule's L1/L2 (a model's intercept); stored sorted and unique.

    Examples
    --------
    >>> spec = TableSpec("w", optimizer="ftrl", hyper={"alpha": 0.1})
    >>> spec.with_hyper(l1=2.0).hyper["l1"]
    2.0
    >>> TableSpec.from_meta(spec.to_meta()) == spec
    True
    >>> TableSpec("w", width=0)
    Traceback (most recent call last):
    ...
    ValueError: table 'w': width must be a positive integer, got 0
    """

    name: str
    width: int = 1
    optimizer: str = "delta"
    hyper: Mapping[str, float] = field(default_factory=dict)
    init: str = "zeros"
    init_params: Mapping[str, float] = field(default_factory=dict)
    dim: int | None = None
    unpenalised_keys: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a table needs a non-empty string name, got {self.name!r}")
        where = f"table {self.name!r}"
        if not _is_int(self.width) or self.width < 1:
            raise ValueError(f"{where}: width must be a positive integer, got {self.width!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"{where}: unknown optimizer {self.optimizer!r}; known: {', '.join(OPTIMIZERS)}")
        if self.init not in INITIALIZERS:
            raise ValueError(f"{where}: unknown init {self.init!r}; known: {', '.join(INITIALIZERS)}")
        if self.dim is not None and (not _is_int(self.dim) or self.dim < 1):
            raise ValueError(f"{where}: dim must be a positive integer or None, got {self.dim!r}")
        keys = self.unpenalised_keys
        if isinstance(keys, (str, bytes)) or not isinstance(keys, Iterable) \
                or not all(_is_int(k) for k in keys):
            raise ValueError(f"{where}: unpenalised_keys must be a list of integers, got {keys!r}")
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "hyper", _real_mapping(self.hyper, "hyper-parameter", self.name))
        object.__setattr__(self, "init_params", _real_mapping(self.init_params, "init parameter", self.name))
        object.__setattr__(self, "unpenalised_keys", tuple(sorted({int(k) for k in keys})))

    @classmethod
    def of(cls, spec: TableSpec | str, *, hyper: Mapping[str, float] | None = None,
           sigma: float | None = None, seed: int | None = None, **fields: Any) -> TableSpec:
        """A spec, or one built from a name and keyword fields: what every ``create_table`` accepts.

        Keywords that are not fields of :class:`TableSpec` are the update
        rule's hyper-parameters (``alpha=0.1``), merged into ``hyper``;
        ``sigma`` and ``seed`` go to ``init_params``.

        Parameters
        ----------
        spec : TableSpec or str
            A complete spec (then no other argument is allowed), or the table's name.
        hyper : mapping, optional
            Hyper-parameters, as a mapping.
        sigma, seed : optional
            Parameters of the ``normal`` initialiser.
        **fields
            Other :class:`TableSpec` fields, and hyper-parameters by name.

        Examples
        --------
        >>> TableSpec.of("w", width=1, optimizer="ftrl", alpha=0.1, l1=1.0).hyper
        mappingproxy({'alpha': 0.1, 'l1': 1.0})
        >>> TableSpec.of("e", width=9, init="normal", sigma=0.01, seed=3).init_params
        mappingproxy({'seed': 3, 'sigma': 0.01})
        """
        if isinstance(spec, TableSpec):
            if hyper or sigma is not None or seed is not None or fields:
                raise TypeError(f"create_table({spec.name!r}): pass a TableSpec alone, or a name with keywords")
            return spec
        names = {f.name for f in dataclasses.fields(cls)}
        own = {k: v for k, v in fields.items() if k in names}
        extra_hyper = {k: v for k, v in fields.items() if k not in names}
        init_params = dict(own.pop("init_params", None) or {})
        init_params.update({k: v for k, v in (("sigma", sigma), ("seed", seed)) if v is not None})
        return cls(spec, hyper={**(hyper or {}), **extra_hyper}, init_params=init_params, **own)

    def with_hyper(self, **updates: float) -> TableSpec:
        """This spec with some hyper-parameters set (validated again).

        Examples
        --------
        >>> spec = TableSpec("w", optimizer="ftrl", hyper={"alpha": 0.1})
        >>> spec.with_hyper(l1=4.0, alpha=0.5).hyper
        mappingproxy({'alpha': 0.5, 'l1': 4.0})
        >>> spec.with_hyper(l1=float("nan"))
        Traceback (most recent call last):
        ...
        ValueError: table 'w': hyper-parameter 'l1' must be a finite number, got nan
        """
        return dataclasses.replace(self, hyper={**self.hyper, **updates})

    def to_meta(self) -> dict[str, Any]:
        """The spec as a JSON-ready dict (a CREATE_TABLE request's metadata).

        Examples
        --------
        >>> TableSpec("w", optimizer="sgd", hyper={"lr": 0.1}, unpenalised_keys=[-1]).to_meta()
        {'table': 'w', 'width': 1, 'optimizer': 'sgd', 'hyper': {'lr': 0.1}, 'init': 'zeros',
         'init_params': {}, 'dim': None, 'unpenalised_keys': [-1]}
        """
        return {"table": self.name, "width": self.width, "optimizer": self.optimizer, "hyper": dict(self.hyper),
                "init": self.init, "init_params": dict(self.init_params), "dim": self.dim,
                "unpenalised_keys": list(self.unpenalised_keys)}

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> TableSpec:
        """Rebuild a spec from :meth:`to_meta`'s dict, refusing unknown fields.

        Raises
        ------
        ValueError
            For a missing name, an unknown field or an invalid value.

        Examples
        --------
        >>> TableSpec.from_meta({"table": "w", "width": 2, "optimizer": "adagrad"})
        TableSpec(name='w', width=2, optimizer='adagrad', hyper=mappingproxy({}), init='zeros', ...)
        >>> TableSpec.from_meta({"table": "w", "widht": 2})
        Traceback (most recent call last):
        ...
        ValueError: table spec has unknown field(s) widht
        """
        known = {"table", "width", "optimizer", "hyper", "init", "init_params", "dim", "unpenalised_keys"}
        unknown = sorted(set(meta) - known)
        if unknown:
            raise ValueError(f"table spec has unknown field(s) {', '.join(map(str, unknown))}")
        fields = {k: v for k, v in meta.items() if k != "table"}
        if "unpenalised_keys" in fields and not isinstance(fields["unpenalised_keys"], list):
            raise ValueError(f"table {meta.get('table')!r}: unpenalised_keys must be a list of integers, "
                             f"got {fields['unpenalised_keys']!r}")
        return cls(meta.get("table"), **fields)
