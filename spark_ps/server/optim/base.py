"""The interface of a server-side update rule.

In a parameter server the *server* applies the optimizer (ps-lite, Angel):
workers push raw gradients and the shard turns them into new weights, so
optimizer state such as Adagrad's accumulators never leaves the shard.

An :class:`Optimizer` is stateless itself, like river's ``optim`` rules but
with the per-coordinate state held by the caller: the table gathers the rows
touched by one push, the weights and every state array in :attr:`state_names`
all of shape ``(n, width)``, calls :meth:`Optimizer.step` on them, and scatters
them back. A rule therefore touches only the keys present in the push, which
is what makes sparse training affordable, and keeps no memory of its own
between calls.

A rule whose weights are a function of its state (FTRL's closed form in
``z`` and ``n``) says so with :attr:`Optimizer.weights_from_state`. The table
then stores the state only and derives weights with :meth:`Optimizer.weights`
when they are read: a push is memory-bound, and not reading and writing a
third array of rows makes it that much cheaper.

Arrays are stored as float32 (half the memory of a shard); rules compute in
float64 where rounding would otherwise accumulate (square roots of small
accumulators, bias corrections), and store the result once.

The numba kernels of the rules use ``error_model="numpy"``: a division by
zero yields inf/NaN as in numpy instead of raising half-way through the rows
(the Python error model's checks also stop the loops from vectorising, a 3x
slowdown). The table rejects any non-finite result before storing it.

The kernels see the arrays flattened (:func:`flat`): every coordinate is
updated independently, and one long loop over ``n · width`` coordinates
vectorises where nested loops over short rows do not (4x faster for FTRL at
width 9).
"""

from __future__ import annotations

import abc
import inspect
import math
import numbers
from typing import Any, ClassVar

import numpy as np

__all__ = ["Optimizer", "flat", "real_hyper"]


def real_hyper(optimizer: str, name: str, value: Any, *, gt: float | None = None, ge: float | None = None,
               lt: float | None = None) -> float:
    """Validate one real-valued hyper-parameter and return it as a float.

    Parameters
    ----------
    optimizer : str
        Name of the optimizer, for the error message.
    name : str
        Name of the hyper-parameter, for the error message.
    value : Any
        The value to check: a finite real number (``bool`` is rejected).
    gt, ge, lt : float, optional
        Bounds: ``value > gt``, ``value >= ge``, ``value < lt``.

    Raises
    ------
    ValueError
        Naming the optimizer, the hyper-parameter, the bound and the value.

    Examples
    --------
    >>> real_hyper("sgd", "lr", 0.5, gt=0)
    0.5
    >>> real_hyper("sgd", "lr", 0, gt=0)
    Traceback (most recent call last):
    ...
    ValueError: sgd: hyper-parameter 'lr' must be > 0, got 0
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{optimizer}: hyper-parameter {name!r} must be a finite real number, got {value!r}")
    bound = None
    if gt is not None and not value > gt:
        bound = f"> {gt}"
    elif ge is not None and not value >= ge:
        bound = f">= {ge}"
    elif lt is not None and not value < lt:
        bound = f"< {lt}"
    if bound is not None:
        raise ValueError(f"{optimizer}: hyper-parameter {name!r} must be {bound}, got {value!r}")
    return float(value)


def flat(array: np.ndarray) -> np.ndarray:
    """A 1-D view of a C-contiguous array: writes through it update ``array``.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.zeros((2, 2), np.float32)
    >>> flat(a)[3] = 1.0
    >>> a.tolist()
    [[0.0, 0.0], [0.0, 1.0]]
    """
    view = array.reshape(-1)
    if not np.shares_memory(view, array):  # reshape copied: updates would be lost
        raise ValueError("optimizer arrays must be C-contiguous: they are updated in place through a flat view")
    return view


class Optimizer(abc.ABC):
    """A per-coordinate update rule applied by the server to gathered rows.

    Subclasses set :attr:`name` and :attr:`state_names`, validate their
    hyper-parameters in ``__init__`` (keeping each one as an attribute of the
    same name, which is what :meth:`params` reports), and implement
    :meth:`_update`.
    """

    #: Name accepted by :func:`spark_ps.server.optim.make_optimizer`.
    name: ClassVar[str]
    #: Names of the per-coordinate state arrays, each shaped like the weights.
    state_names: ClassVar[tuple[str, ...]] = ()
    #: Whether the weights are a function of the state (:meth:`weights`): a
    #: step then reads the state only, and its weights arguments may be None.
    weights_from_state: ClassVar[bool] = False

    def step(self, weights: np.ndarray | None, state: dict[str, np.ndarray], grads: np.ndarray, *,
             out: tuple[np.ndarray | None, dict[str, np.ndarray]] | None = None) -> None:
        """Apply one update to the rows of one push, in place or into ``out``.

        Parameters
        ----------
        weights : ndarray of float32, shape (n, width), or None
            Current weights of the pushed keys; overwritten with the new ones
            unless ``out`` is given. A rule with :attr:`weights_from_state`
            does not read them, only writes the new ones (None: not wanted).
        state : dict of str to ndarray of float32, shape (n, width)
            One array per name in :attr:`state_names`; updated in place unless
            ``out`` is given.
        grads : ndarray of float32, shape (n, width)
            The pushed gradients (already summed per key by the client).
        out : (weights, state), optional
            Arrays of the same shapes that receive the update, leaving the
            inputs as they were: a shard keeps the old rows to restore them
            if a later part of the push turns out non-finite.

        Examples
        --------
        >>> import numpy as np
        >>> from spark_ps.server.optim import make_optimizer
        >>> opt = make_optimizer("adagrad", lr=0.1, initial_accumulator_value=0.0, eps=1e-12)
        >>> w = np.zeros((1, 2), np.float32)
        >>> state = opt.init_state(w)
        >>> opt.step(w, state, np.array([[2.0, -0.5]], np.float32))
        >>> w.astype(float).round(6).tolist(), state["n"].tolist()
        ([[-0.1, 0.1]], [[4.0, 0.25]])
        >>> new_w, new_state = np.empty_like(w), opt.init_state(w)
        >>> opt.step(w, state, np.array([[0.0, 0.0]], np.float32), out=(new_w, new_state))
        >>> bool((new_w == w).all()), state["n"].tolist()   # a zero gradient changes nothing
        (True, [[4.0, 0.25]])
        """
        self._check_step_args(weights, state, grads, writes=out is None)
        if out is None:
            out = (weights, state)
        else:
            self._check_step_args(*out, grads, writes=True, what="out ")
        self._update(weights, state, grads, *out)

    @abc.abstractmethod
    def _update(self, weights: np.ndarray | None, state: dict[str, np.ndarray], grads: np.ndarray,
                out_weights: np.ndarray | None, out_state: dict[str, np.ndarray]) -> None:
        """The update itself, from the inputs to the outputs; arguments are already checked by :meth:`step`.

        The outputs may *be* the inputs (an in-place step), so a kernel must
        read every input of a coordinate before it writes any output of it.
        The weights are None only for a rule with :attr:`weights_from_state`.
        """

    def weights(self, state: dict[str, np.ndarray], out: np.ndarray | None = None) -> np.ndarray:
        """The weights that ``state`` stands for, for a rule with :attr:`weights_from_state`.

        Parameters
        ----------
        state : dict of str to ndarray of float32, shape (n, width)
            One array per name in :attr:`state_names`.
        out : ndarray of float32, shape (n, width), optional
            Receives the weights; a new array by default.

        Returns
        -------
        ndarray of float32, shape (n, width)

        Raises
        ------
        TypeError
            For a rule that stores its weights beside its state.

        Examples
        --------
        >>> import numpy as np
        >>> from spark_ps.server.optim import make_optimizer
        >>> opt = make_optimizer("ftrl", alpha=0.5, beta=1.0)
        >>> w = np.zeros((1, 1), np.float32)
        >>> state = opt.init_state(w)
        >>> opt.step(w, state, np.array([[2.0]], np.float32))
        >>> bool((opt.weights(state) == w).all())
        True
        """
        if not self.weights_from_state:
            raise TypeError(f"{self.name}: the weights are stored beside the state, not derived from it")
        reference = state[self.state_names[0]]
        out = np.empty(reference.shape, dtype=np.float32) if out is None else out
        self._check_step_args(out, state, out, writes=True, what="weights ")
        self._derive_weights(state, out)
        return out

    def _derive_weights(self, state: dict[str, np.ndarray], out: np.ndarray) -> None:
        """Write the weights of ``state`` into ``out`` (rules with :attr:`weights_from_state`)."""
        raise NotImplementedError

    def init_state(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """State of rows that start out with ``weights``: zeros unless a rule says otherwise.

        The table calls this for rows it creates (their weights come from the
        row initialiser) and for imported rows that carry no state.

        Examples
        --------
        >>> import numpy as np
        >>> from spark_ps.server.optim import make_optimizer
        >>> make_optimizer("adam").init_state(np.ones((1, 2), np.float32))["m"].tolist()
        [[0.0, 0.0]]
        """
        return {name: np.zeros(weights.shape, dtype=np.float32) for name in self.state_names}

    def unregularised(self) -> Optimizer:
        """The same rule without its L1/L2 penalty, for rows that must not be shrunk (an intercept).

        Rules without a penalty return themselves.

        Examples
        --------
        >>> from spark_ps.server.optim import make_optimizer
        >>> make_optimizer("ftrl", alpha=0.5, l1=2.0, l2=1.0).unregularised()
        FTRL(alpha=0.5, beta=1.0, l1=0.0, l2=0.0)
        >>> make_optimizer("sgd", lr=0.1).unregularised()
        SGD(lr=0.1)
        """
        return self

    @property
    def represents_initial_weights(self) -> bool:
        """Whether a fresh row (:meth:`init_state`) can hold any initial weight, not only zero.

        Always true when the weights are stored; a rule with
        :attr:`weights_from_state` may be unable to (FTRL with ``beta = l2 = 0``).

        Examples
        --------
        >>> from spark_ps.server.optim import make_optimizer
        >>> make_optimizer("ftrl", beta=1.0).represents_initial_weights
        True
        >>> make_optimizer("ftrl", beta=0.0, l2=0.0).represents_initial_weights
        False
        """
        return True

    def params(self) -> dict[str, float]:
        """Hyper-parameters; ``make_optimizer(opt.name, **opt.params())`` rebuilds the rule.

        Examples
        --------
        >>> from spark_ps.server.optim import make_optimizer
        >>> make_optimizer("sgd", lr=0.25).params()
        {'lr': 0.25}
        """
        return {name: getattr(self, name) for name in self.hyper_names()}

    @classmethod
    def hyper_names(cls) -> tuple[str, ...]:
        """Names of the hyper-parameters, i.e. the keyword arguments of ``__init__``."""
        return tuple(p for p in inspect.signature(cls.__init__).parameters if p != "self")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.params() == self.params()

    def __hash__(self) -> int:
        return hash((type(self), tuple(self.params().items())))

    def _check_step_args(self, weights: np.ndarray | None, state: dict[str, np.ndarray], grads: np.ndarray, *,
                         writes: bool, what: str = "") -> None:
        # Cheap O(1) checks: a wrong dtype or shape here would otherwise be a
        # silent numba re-specialisation or an out-of-bounds write.
        if set(state) != set(self.state_names):
            raise ValueError(f"{self.name}: {what}state must have exactly the arrays {list(self.state_names)}, "
                             f"got {sorted(state)}")
        if weights is None and not self.weights_from_state:
            raise TypeError(f"{self.name}: {what}weights are required (they are not derived from the state)")
        arrays = (*((("weights", weights),) if weights is not None else ()),
                  *((f"state {k!r}", v) for k, v in state.items()))
        for label, array in (("grads", grads), *arrays):
            if not isinstance(array, np.ndarray) or array.dtype != np.float32:
                raise TypeError(f"{self.name}: {what}{label} must be a float32 ndarray, got "
                                f"{getattr(array, 'dtype', type(array).__name__)}")
            if array.ndim != 2 or array.shape != grads.shape:
                raise ValueError(f"{self.name}: {what}{label} has shape {array.shape}, expected 2-D rows "
                                 f"of the gradients' shape {grads.shape}")
        for label, array in arrays:
            if writes and not array.flags.writeable:
                raise ValueError(f"{self.name}: {what}{label} must be writeable (it is updated in place)")
            if not array.flags.c_contiguous:
                raise ValueError(f"{self.name}: {what}{label} must be C-contiguous (the kernels see it through "
                                 f"a flat view)")
