"""Server-side update rules against independent per-coordinate references.

Each reference below is the textbook rule written for one scalar coordinate
in plain Python floats (float64, no float32 storage), kept per key in a dict.
The implementation under test is driven the way a table drives it: gather
the rows of a sparse push, ``step`` them, scatter them back.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from spark_ps.server.optim import OPTIMIZERS, make_optimizer


# --------------------------------------------------------------------------- references
class Reference:
    """Per-coordinate state of every key, created on first use."""

    def __init__(self, **hyper):
        self.h = hyper
        self.coords: dict[tuple[int, int], dict[str, float]] = {}

    def coord(self, key, col):
        return self.coords.setdefault((key, col), self.fresh())

    def fresh(self):
        return {"w": 0.0}

    def weight(self, key, col):
        return self.coord(key, col)["w"]


class DeltaRef(Reference):
    def update(self, c, g):
        c["w"] += g


class SGDRef(Reference):
    def update(self, c, g):
        c["w"] -= self.h["lr"] * g


class AdagradRef(Reference):
    def fresh(self):
        return {"w": 0.0, "n": self.h["initial_accumulator_value"]}

    def update(self, c, g):
        c["n"] += g * g
        c["w"] -= self.h["lr"] * g / (math.sqrt(c["n"]) + self.h["eps"])


def ftrl_weight(z, n, alpha, beta, l1, l2):
    """McMahan et al. (2013), Algorithm 1, the per-coordinate closed form."""
    if abs(z) <= l1:
        return 0.0
    return -(z - math.copysign(l1, z)) / ((beta + math.sqrt(n)) / alpha + l2)


class FTRLRef(Reference):
    def fresh(self):
        return {"w": 0.0, "z": 0.0, "n": 0.0}

    def update(self, c, g):
        h = self.h
        sigma = (math.sqrt(c["n"] + g * g) - math.sqrt(c["n"])) / h["alpha"]
        c["z"] += g - sigma * c["w"]
        c["n"] += g * g
        c["w"] = ftrl_weight(c["z"], c["n"], h["alpha"], h["beta"], h["l1"], h["l2"])


class AdamRef(Reference):
    def fresh(self):
        return {"w": 0.0, "m": 0.0, "v": 0.0, "t": 0}

    def update(self, c, g):
        h = self.h
        c["t"] += 1
        c["m"] = h["beta1"] * c["m"] + (1 - h["beta1"]) * g
        c["v"] = h["beta2"] * c["v"] + (1 - h["beta2"]) * g * g
        m_hat = c["m"] / (1 - h["beta1"] ** c["t"])
        v_hat = c["v"] / (1 - h["beta2"] ** c["t"])
        c["w"] -= h["lr"] * m_hat / (math.sqrt(v_hat) + h["eps"])


CASES = [
    ("delta", {}, DeltaRef),
    ("sgd", {"lr": 0.3}, SGDRef),
    ("adagrad", {"lr": 0.2, "initial_accumulator_value": 0.1, "eps": 1e-7}, AdagradRef),
    ("adagrad", {"lr": 0.05, "initial_accumulator_value": 0.0, "eps": 1e-3}, AdagradRef),
    ("ftrl", {"alpha": 0.1, "beta": 1.0, "l1": 0.0, "l2": 0.0}, FTRLRef),
    ("ftrl", {"alpha": 0.5, "beta": 0.5, "l1": 0.8, "l2": 2.0}, FTRLRef),
    ("adam", {"lr": 0.05, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}, AdamRef),
    ("adam", {"lr": 0.01, "beta1": 0.5, "beta2": 0.9, "eps": 1e-4}, AdamRef),
]


def random_pushes(rng, n_keys, width, n_pushes):
    """Sparse pushes over a small key range, so keys repeat across pushes with
    different counts; gradients of mixed scale, some exactly zero."""
    for _ in range(n_pushes):
        keys = np.unique(rng.integers(0, n_keys, rng.integers(1, n_keys)))
        grads = rng.normal(size=(len(keys), width)) * rng.choice([0.01, 1.0, 5.0], size=(len(keys), 1))
        grads[rng.random(grads.shape) < 0.1] = 0.0
        yield keys, grads.astype(np.float32)


@pytest.mark.parametrize("name, hyper, reference", CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rule_matches_reference_on_sparse_push_sequences(name, hyper, reference, seed):
    rng = np.random.default_rng(seed)
    n_keys, width = 30, 3
    opt = make_optimizer(name, **hyper)
    ref = reference(**hyper)
    weights = np.zeros((n_keys, width), np.float32)
    state = opt.init_state(weights)
    for keys, grads in random_pushes(rng, n_keys, width, n_pushes=15):
        w, st = weights[keys], {s: a[keys] for s, a in state.items()}
        opt.step(w, st, grads)
        weights[keys] = w
        for s, a in state.items():
            a[keys] = st[s]
        for i, key in enumerate(keys):
            for col in range(width):
                ref.update(ref.coord(int(key), col), float(grads[i, col]))
    expected = np.array([[ref.weight(k, c) for c in range(width)] for k in range(n_keys)])
    np.testing.assert_allclose(weights, expected, rtol=2e-4, atol=2e-6)
    if name == "ftrl" and hyper["l1"] > 0:
        # L1 must give exact zeros, in the same places as the reference (up to boundary cases).
        assert (weights == 0).any()
        assert np.mean((weights == 0) == (expected == 0)) > 0.95


def test_ftrl_hand_worked_two_steps():
    alpha, beta, l1, l2 = 0.5, 1.0, 0.5, 1.0
    opt = make_optimizer("ftrl", alpha=alpha, beta=beta, l1=l1, l2=l2)
    w = np.zeros((1, 2), np.float32)
    state = opt.init_state(w)
    # Step 1, g = (2, 0.3), from z = n = w = 0:
    #   n = 4, sigma = (2 - 0)/0.5 = 4, z = 2 - 4·0 = 2 > l1, w = -(2 - 0.5)/((1 + 2)/0.5 + 1) = -1.5/7
    #   second coordinate: z = 0.3 <= l1, so w = 0 exactly.
    opt.step(w, state, np.array([[2.0, 0.3]], np.float32))
    assert w[0, 0] == pytest.approx(-1.5 / 7, rel=1e-6)
    assert w[0, 1] == 0.0
    assert state["z"].tolist() == [[2.0, pytest.approx(0.3)]]
    assert state["n"].tolist() == [[4.0, pytest.approx(0.09)]]
    # Step 2, g = (-1, 0):
    #   n = 5, sigma = (√5 - 2)/0.5, z = 2 - 1 - sigma·(-1.5/7), w = -(z - 0.5)/((1 + √5)/0.5 + 1)
    opt.step(w, state, np.array([[-1.0, 0.0]], np.float32))
    sigma = (math.sqrt(5) - 2) / 0.5
    z = 2 - 1 + sigma * 1.5 / 7
    assert state["z"][0, 0] == pytest.approx(z, rel=1e-6)
    assert w[0, 0] == pytest.approx(-(z - 0.5) / ((1 + math.sqrt(5)) / 0.5 + 1), rel=1e-6)
    assert w[0, 1] == 0.0


@pytest.mark.parametrize("l1, l2, beta", [(0.0, 0.0, 1.0), (0.3, 0.5, 1.0), (0.1, 0.0, 0.2)])
def test_ftrl_state_of_new_rows_reproduces_their_initial_weights(l1, l2, beta):
    alpha = 0.2
    opt = make_optimizer("ftrl", alpha=alpha, beta=beta, l1=l1, l2=l2)
    w0 = np.random.default_rng(0).normal(scale=0.1, size=(50, 4)).astype(np.float32)
    w0[0, 0] = 0.0
    state = opt.init_state(w0)
    recovered = [[ftrl_weight(float(z), 0.0, alpha, beta, l1, l2) for z in row] for row in state["z"]]
    np.testing.assert_allclose(recovered, w0, rtol=1e-5, atol=1e-7)
    assert not state["n"].any()
    # A zero-gradient step is then a no-op, instead of snapping w0 to 0.
    w = w0.copy()
    opt.step(w, state, np.zeros_like(w))
    np.testing.assert_allclose(w, w0, rtol=1e-5, atol=1e-7)


def test_adam_bias_correction_is_per_coordinate():
    # Two rows: one pushed every step, one only at the last step. The rare row's
    # first update must be a full bias-corrected step of size ~lr, as if it were step 1.
    opt = make_optimizer("adam", lr=0.1)
    w = np.zeros((2, 1), np.float32)
    state = opt.init_state(w)
    for _ in range(10):
        rows = np.array([0])
        ww, st = w[rows], {s: a[rows] for s, a in state.items()}
        opt.step(ww, st, np.ones((1, 1), np.float32))
        w[rows] = ww
        for s in state:
            state[s][rows] = st[s]
    ww, st = w.copy(), {s: a.copy() for s, a in state.items()}
    opt.step(ww, st, np.ones((2, 1), np.float32))
    assert st["t"].ravel().tolist() == [11.0, 1.0]
    assert ww[1, 0] == pytest.approx(-0.1, rel=1e-6)


def test_adagrad_new_rows_start_from_the_initial_accumulator():
    opt = make_optimizer("adagrad", initial_accumulator_value=0.25)
    assert opt.init_state(np.zeros((2, 3), np.float32))["n"].tolist() == [[0.25] * 3] * 2


def test_step_updates_in_place_and_leaves_gradients_alone():
    for name in OPTIMIZERS:
        opt = make_optimizer(name)
        w = np.full((4, 2), 0.5, np.float32)
        state = opt.init_state(w)
        g = np.linspace(-1, 1, 8, dtype=np.float32).reshape(4, 2)
        g_before = g.copy()
        w_id = id(w)
        opt.step(w, state, g)
        assert id(w) == w_id and not np.array_equal(w, np.full((4, 2), 0.5, np.float32)), name
        np.testing.assert_array_equal(g, g_before)


def test_step_into_out_equals_the_in_place_step_and_leaves_its_inputs_alone():
    rng = np.random.default_rng(5)
    for name in OPTIMIZERS:
        opt = make_optimizer(name)
        w = rng.normal(size=(50, 3)).astype(np.float32)
        state = opt.init_state(w)
        opt.step(w, state, rng.normal(size=w.shape).astype(np.float32))  # non-trivial state first
        g = rng.normal(size=w.shape).astype(np.float32)
        inputs = (w.copy(), {s: a.copy() for s, a in state.items()})
        out = (np.full_like(w, np.nan), {s: np.full_like(a, np.nan) for s, a in state.items()})
        opt.step(w, state, g, out=out)
        np.testing.assert_array_equal(w, inputs[0], err_msg=name)
        for s in state:
            np.testing.assert_array_equal(state[s], inputs[1][s], err_msg=f"{name} {s}")
        opt.step(w, state, g)
        np.testing.assert_array_equal(out[0], w, err_msg=name)
        for s in state:
            np.testing.assert_array_equal(out[1][s], state[s], err_msg=f"{name} {s}")


def test_step_rejects_arrays_it_cannot_update_through_a_flat_view():
    opt = make_optimizer("adagrad")
    w = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="weights must be C-contiguous"):
        opt.step(w[:, ::2], opt.init_state(w[:, ::2]), np.ones((3, 2), np.float32))
    with pytest.raises(ValueError, match=r"out state 'n' has shape \(2, 4\)"):
        opt.step(w, opt.init_state(w), np.ones_like(w), out=(np.empty_like(w), {"n": np.empty((2, 4), np.float32)}))


def test_step_checks_its_arguments():
    opt = make_optimizer("ftrl")
    w = np.zeros((2, 3), np.float32)
    state = opt.init_state(w)
    g = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"\['z', 'n'\]"):
        opt.step(w, {"z": state["z"]}, g)
    with pytest.raises(TypeError, match="grads must be a float32"):
        opt.step(w, state, g.astype(np.float64))
    with pytest.raises(ValueError, match=r"state 'n' has shape \(3, 3\)"):
        opt.step(w, {"z": state["z"], "n": np.zeros((3, 3), np.float32)}, g)
    with pytest.raises(ValueError, match=r"weights has shape \(2, 3\), expected .*\(1, 3\)"):
        opt.step(w, state, g[:1])
    with pytest.raises(ValueError, match=r"grads has shape \(6,\)"):
        opt.step(w, state, g.reshape(-1))
    w.flags.writeable = False
    with pytest.raises(ValueError, match="weights must be writeable"):
        opt.step(w, state, g)


def test_make_optimizer_round_trips_params_and_names_bad_input():
    for name, cls in OPTIMIZERS.items():
        opt = make_optimizer(name)
        assert isinstance(opt, cls) and opt.name == name
        assert make_optimizer(name, **opt.params()) == opt
        assert all(isinstance(v, float) for v in opt.params().values())
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        make_optimizer("rmsprop")
    with pytest.raises(ValueError, match="learning_rate"):
        make_optimizer("sgd", learning_rate=0.1)
    with pytest.raises(ValueError, match="accepted: none"):
        make_optimizer("delta", lr=0.1)


@pytest.mark.parametrize("name, hyper, culprit", [
    ("sgd", {"lr": 0.0}, "lr"),
    ("sgd", {"lr": -1.0}, "lr"),
    ("sgd", {"lr": float("nan")}, "lr"),
    ("sgd", {"lr": float("inf")}, "lr"),
    ("sgd", {"lr": True}, "lr"),
    ("sgd", {"lr": "0.1"}, "lr"),
    ("adagrad", {"eps": 0.0}, "eps"),
    ("adagrad", {"initial_accumulator_value": -0.1}, "initial_accumulator_value"),
    ("ftrl", {"alpha": 0.0}, "alpha"),
    ("ftrl", {"beta": -1.0}, "beta"),
    ("ftrl", {"l1": -0.1}, "l1"),
    ("ftrl", {"l2": -0.1}, "l2"),
    ("adam", {"beta1": 1.0}, "beta1"),
    ("adam", {"beta2": -0.1}, "beta2"),
    ("adam", {"lr": 0}, "lr"),
])
def test_invalid_hyper_parameters_are_named(name, hyper, culprit):
    with pytest.raises(ValueError, match=f"{name}: hyper-parameter '{culprit}'"):
        make_optimizer(name, **hyper)


def test_ftrl_weights_are_the_closed_form_of_the_state_and_need_not_be_passed():
    """A table stores FTRL's z and n only: a step without weights must leave the same state."""
    h = {"alpha": 0.3, "beta": 0.5, "l1": 0.4, "l2": 0.2}
    opt = make_optimizer("ftrl", **h)
    rng = np.random.default_rng(3)
    w = rng.normal(scale=0.5, size=(40, 3)).astype(np.float32)
    with_w, without = opt.init_state(w), opt.init_state(w)
    for _ in range(4):
        g = rng.normal(size=w.shape).astype(np.float32)
        opt.step(w, with_w, g)
        out = {name: np.empty_like(array) for name, array in without.items()}
        opt.step(None, without, g, out=(None, out))
        without = out
    for name in opt.state_names:
        np.testing.assert_array_equal(without[name], with_w[name])
    expected = [[ftrl_weight(float(z), float(n), **h) for z, n in zip(zr, nr, strict=True)]
                for zr, nr in zip(with_w["z"], with_w["n"], strict=True)]
    np.testing.assert_allclose(opt.weights(without), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(opt.weights(without), w)  # what step wrote is the same closed form


def test_weights_of_state_only_for_rules_that_derive_them():
    opt = make_optimizer("adagrad")
    w = np.zeros((2, 2), np.float32)
    with pytest.raises(TypeError, match="adagrad: the weights are stored beside the state"):
        opt.weights(opt.init_state(w))
    with pytest.raises(TypeError, match="adagrad: weights are required"):
        opt.step(None, opt.init_state(w), np.ones_like(w))
    assert make_optimizer("ftrl").represents_initial_weights and opt.represents_initial_weights
    assert not make_optimizer("ftrl", beta=0.0, l2=0.0).represents_initial_weights
