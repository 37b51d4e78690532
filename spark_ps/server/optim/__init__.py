"""Server-side update rules, one module each, built by name with :func:`make_optimizer`.

=========  ===================================  ================
name       rule                                 state per weight
=========  ===================================  ================
delta      ``w += g``                           none
sgd        ``w -= lr·g``                        none
adagrad    Adagrad                              ``n``
ftrl       FTRL-Proximal (McMahan et al. 2013)  ``z``, ``n``
adam       lazy Adam, per-coordinate ``t``      ``m``, ``v``, ``t``
=========  ===================================  ================
"""

from __future__ import annotations

from typing import Any

from spark_ps.server.optim.adagrad import Adagrad
from spark_ps.server.optim.adam import Adam
from spark_ps.server.optim.base import Optimizer
from spark_ps.server.optim.delta import Delta
from spark_ps.server.optim.ftrl import FTRL
from spark_ps.server.optim.sgd import SGD

__all__ = ["FTRL", "OPTIMIZERS", "SGD", "Adagrad", "Adam", "Delta", "Optimizer", "make_optimizer"]

#: Optimizer classes by the name :func:`make_optimizer` accepts.
OPTIMIZERS: dict[str, type[Optimizer]] = {cls.name: cls for cls in (Delta, SGD, Adagrad, FTRL, Adam)}


def make_optimizer(name: str, **hyper: Any) -> Optimizer:
    """Build an update rule by name.

    Parameters
    ----------
    name : str
        One of ``"delta"``, ``"sgd"``, ``"adagrad"``, ``"ftrl"``, ``"adam"``.
    **hyper
        Hyper-parameters of that rule; omitted ones take their defaults.

    Raises
    ------
    ValueError
        For an unknown name, an unknown hyper-parameter or an invalid value,
        naming the culprit.

    Examples
    --------
    >>> make_optimizer("ftrl", alpha=0.05, l1=1.0)
    FTRL(alpha=0.05, beta=1.0, l1=1.0, l2=0.0)
    >>> make_optimizer("sgd", learning_rate=0.1)
    Traceback (most recent call last):
    ...
    ValueError: optimizer 'sgd' got unknown hyper-parameter(s) learning_rate (accepted: lr)
    """
    cls = OPTIMIZERS.get(name)
    if cls is None:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(sorted(OPTIMIZERS))}")
    unknown = sorted(set(hyper) - set(cls.hyper_names()))
    if unknown:
        accepted = ", ".join(cls.hyper_names()) or "none"
        raise ValueError(f"optimizer {name!r} got unknown hyper-parameter(s) {', '.join(unknown)} "
                         f"(accepted: {accepted})")
    return cls(**hyper)
