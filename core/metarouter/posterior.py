"""What a user's comparisons say: a joint posterior over their trade-off and the arms' quality.

A comparison "arm a's answer was worth it over arm b's, on query x, at these costs" depends on
the user's weight on quality ``alpha``, how decisive they are (a Bradley-Terry temperature
``T``) and how good the two answers really were. The router's quality head gives a prior belief
``p = sigmoid(l)`` that each answer was good. On a user's own traffic that belief can be off, so
the posterior also covers how the arms really do there:

* a **regime**: *familiar* traffic (like the training queries: trust the quality head's
  per-query logits ``l_k(x)``) or *novel* traffic (new tasks: trust only each arm's overall
  ability, its query-blind base logit ``b_k``). The prior odds come from the router's novelty
  score of the user's queries (:mod:`metarouter.novelty`); the comparisons update them;
* **offsets** on this traffic: a shift shared by every arm (the traffic is easier or harder)
  plus one offset per arm, Gaussian with widths that depend on the regime. The widths are
  learned from held-out task groups of the training data (:mod:`metarouter.calibration`).

Each comparison's likelihood marginalises the unobserved 0/1 qualities of both answers::

    P(a over b) = sum_{g_a, g_b} P(g_a, g_b) sigmoid((alpha (g_a - g_b) - (1 - alpha) dc) / T)

with ``P(g_k = 1) = sigmoid(logit_k + shift + offset_k)``, ``dc`` the difference of the
normalised costs the user saw, a small label-flip rate, and outcomes coupled beyond
independence (an easy query is easy for every model; the coupling is measured on the training
outcomes). Where answers are graded on a scale rather than pass/fail (a judge's score, a share
of test cases, a mean over samples), an answer's quality is close to its expected quality on
its query, and the user compares ``p_a - p_b``. A share ``binary_share`` of comparisons
(measured on the training outcomes: 1 for pass/fail data) uses the 0/1 likelihood above, the
rest this graded one; only where ``p`` is a per-query prediction (the novel regime's query-blind
logits read every comparison as pass/fail, see :meth:`PosteriorConfig.graded_share`).

The posterior is a grid over ``(alpha, T, regime)`` with a Laplace approximation over
the offsets at each grid point (damped Newton steps, vectorised over the grid), i.e. a mixture of
Gaussians weighted by each grid point's evidence.

Routing takes the Bayes decision: the arm with the highest posterior expected utility
``E[alpha * quality_k(x)] - E[1 - alpha] * cost_k(x)``. :func:`comparison_value` scores a
candidate comparison by its expected value of information for that decision (which query and
which pair to ask the user about next).

Everything here is numpy and takes a few milliseconds for the comparisons a user gives.

References:
    Bradley & Terry (1952). MacKay (1992), the evidence framework and the probit approximation of
    ``E[sigmoid]`` under a Gaussian. Howard (1966), information value theory; Chaloner &
    Verdinelli (1995), Bayesian experimental design.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from metarouter.errors import ConfigError

__all__ = [
    "REGIME_FLOOR",
    "ComparisonData",
    "PosteriorConfig",
    "Regime",
    "UserPosterior",
    "bt_terms",
    "comparison_value",
    "coupled_outcomes",
    "graded_terms",
    "infer_posterior",
    "win_probability",
]

_LOGIT_CLIP = 12.0
#: Width of the smooth max(0, x) in the comonotone outcome coupling.
_COUPLING_SMOOTHING = 0.02
#: Floor of each regime's prior probability, so the comparisons can always switch regimes.
REGIME_FLOOR = 0.02


@dataclass(frozen=True)
class Regime:
    """How a user's traffic relates to the training queries (see the module docstring).

    Attributes:
        name: ``familiar`` or ``novel`` (or any label).
        query_weight: 1 = the quality head's per-query logits, 0 = each arm's query-blind base
            logit, in between a blend.
        shared_sd: Prior std of the logit shift shared by every arm on this traffic.
        arm_sd: Prior std of each arm's own logit offset on this traffic.
    """

    name: str
    query_weight: float
    shared_sd: float
    arm_sd: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.query_weight <= 1.0:
            raise ConfigError(f"Regime {self.name!r}: query_weight must be in [0, 1].")
        if not (self.shared_sd > 0 and self.arm_sd > 0):
            raise ConfigError(f"Regime {self.name!r}: shared_sd and arm_sd must be > 0.")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "query_weight": self.query_weight,
            "shared_sd": self.shared_sd,
            "arm_sd": self.arm_sd,
        }


def _default_regimes() -> tuple[Regime, ...]:
    return (Regime("familiar", 1.0, 0.3, 0.3), Regime("novel", 0.0, 1.0, 1.0))


@dataclass(frozen=True)
class PosteriorConfig:
    """Grids and priors of the user posterior (saved with the router).

    Attributes:
        alpha_points: Size of the grid over the quality weight alpha in [0, 1].
        extreme_mass: Prior probability of each of alpha = 0 (only cost matters) and alpha = 1
            (only quality matters); the rest of the grid shares the remaining mass evenly.
        temperatures: Bradley-Terry temperatures T a user may answer with (uniform prior).
        flip_rate: Share of answers that are slips (the other answer picked).
        outcome_coupling: How often two answers to the same query succeed or fail together
            beyond independence (0: independent; 1: as together as their odds allow).
        binary_share: Share of comparisons whose answers are pass/fail (the 0/1 likelihood);
            the rest are graded on a scale and compared by their expected qualities.
        regimes: The traffic regimes; the first is the familiar one, the last the novel one.
        newton_steps: Newton iterations of the Laplace approximation.
        prune: Mixture components below this share of the largest weight are dropped.
    """

    alpha_points: int = 21
    extreme_mass: float = 0.05
    temperatures: tuple[float, ...] = (0.02, 0.05, 0.1)
    flip_rate: float = 0.025
    outcome_coupling: float = 0.0
    binary_share: float = 1.0
    regimes: tuple[Regime, ...] = field(default_factory=_default_regimes)
    newton_steps: int = 12
    prune: float = 1e-4

    def __post_init__(self) -> None:
        if self.alpha_points < 3:
            raise ConfigError("PosteriorConfig.alpha_points must be >= 3.")
        if not 0 <= self.extreme_mass < 0.5:
            raise ConfigError("PosteriorConfig.extreme_mass must be in [0, 0.5).")
        if not self.temperatures or min(self.temperatures) <= 0:
            raise ConfigError("PosteriorConfig.temperatures must be positive.")
        if not 0 <= self.flip_rate < 0.5:
            raise ConfigError("PosteriorConfig.flip_rate must be in [0, 0.5).")
        if not 0 <= self.outcome_coupling <= 1:
            raise ConfigError("PosteriorConfig.outcome_coupling must be in [0, 1].")
        if not 0 <= self.binary_share <= 1:
            raise ConfigError(
                "PosteriorConfig.binary_share must be in [0, 1] (1: pass/fail outcomes)."
            )
        if len(self.regimes) < 1:
            raise ConfigError("PosteriorConfig.regimes needs at least one regime.")
        object.__setattr__(self, "temperatures", tuple(float(t) for t in self.temperatures))
        object.__setattr__(
            self,
            "regimes",
            tuple(r if isinstance(r, Regime) else Regime(**r) for r in self.regimes),
        )

    def graded_share(self, query_weight: np.ndarray | float) -> np.ndarray:
        """Share of comparisons read as graded, for a regime trusting per-query logits this much.

        The graded likelihood takes ``p`` for the answer's expected quality on its query, which
        holds for the quality head's per-query logits. A query-blind base logit is an arm's
        average over queries; around it even graded answers spread like pass/fail ones, so the
        novel regime (query weight 0) reads every comparison as pass/fail.
        """
        return (1.0 - self.binary_share) * np.asarray(query_weight, np.float64)

    @property
    def alpha_grid(self) -> np.ndarray:
        """The alpha grid."""
        return np.linspace(0.0, 1.0, self.alpha_points)

    def regime_prior(self, novelty: float) -> np.ndarray:
        """Prior probability of each regime for traffic with novelty score ``novelty``.

        With two regimes: ``(1 - novelty, novelty)`` (floored so the data can switch them);
        otherwise the weight moves linearly from the first to the last regime.
        """
        t = float(np.clip(novelty, REGIME_FLOOR, 1 - REGIME_FLOOR))
        n = len(self.regimes)
        if n == 1:
            return np.ones(1)
        pos = np.linspace(0.0, 1.0, n)
        w = np.maximum(1e-3, 1.0 - np.abs(pos - t) * (n - 1))
        if n == 2:
            w = np.array([1 - t, t])
        return w / w.sum()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "alpha_points": self.alpha_points,
            "extreme_mass": self.extreme_mass,
            "temperatures": list(self.temperatures),
            "flip_rate": self.flip_rate,
            "outcome_coupling": self.outcome_coupling,
            "binary_share": self.binary_share,
            "regimes": [r.to_dict() for r in self.regimes],
            "newton_steps": self.newton_steps,
            "prune": self.prune,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PosteriorConfig:
        """Inverse of :meth:`to_dict`.

        Raises:
            ConfigError: Unknown keys or invalid values.
        """
        known = {
            "alpha_points",
            "extreme_mass",
            "temperatures",
            "flip_rate",
            "outcome_coupling",
            "binary_share",
            "regimes",
            "newton_steps",
            "prune",
        }
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown PosteriorConfig keys {unknown}; known: {sorted(known)}.")
        values = dict(data)
        if "regimes" in values:
            try:
                values["regimes"] = tuple(Regime(**r) for r in values["regimes"])
            except TypeError as exc:
                raise ConfigError(f"malformed PosteriorConfig regimes: {exc}") from exc
        if "temperatures" in values:
            values["temperatures"] = tuple(values["temperatures"])
        return cls(**values)


@dataclass(frozen=True)
class ComparisonData:
    """A user's comparisons as arrays; arm slots index the arms that were compared.

    Attributes:
        arms: Names of the compared arms (slot order).
        base: (A,) query-blind base logit of each compared arm (its overall ability).
        win: (N,) slot of the preferred answer's arm.
        lose: (N,) slot of the other arm.
        win_logit: (N,) the quality head's logit for the preferred answer's query and arm.
        lose_logit: (N,) same for the other answer.
        win_cost: (N,) normalised cost the user saw for the preferred answer (``min(c/tau, 1)``).
        lose_cost: (N,) same for the other answer.
    """

    arms: tuple[str, ...]
    base: np.ndarray
    win: np.ndarray
    lose: np.ndarray
    win_logit: np.ndarray
    lose_logit: np.ndarray
    win_cost: np.ndarray
    lose_cost: np.ndarray

    def __len__(self) -> int:
        return len(self.win)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def bt_terms(
    dc: Any, alpha: Any, temp: Any, flip: float, sigmoid: Callable[[Any], Any] = _sigmoid
) -> tuple[Any, Any, Any]:
    """Bradley-Terry probabilities with slips: equal qualities, preferred good, other good.

    Works on numpy arrays, or on torch tensors with ``sigmoid=torch.sigmoid`` (fine-tuning).

    Returns:
        ``(base, d_plus, d_minus)`` so that ``P(win) = base + P10 d_plus + P01 d_minus``, with
        P10 (P01) the probability that only the preferred (only the other) answer was good.
    """
    b0 = sigmoid(-(1 - alpha) * dc / temp)
    bp = sigmoid((alpha - (1 - alpha) * dc) / temp)
    bm = sigmoid((-alpha - (1 - alpha) * dc) / temp)
    k = 1.0 - 2.0 * flip
    return flip + k * b0, k * (bp - b0), k * (bm - b0)


def coupled_outcomes(
    pw: Any, pl: Any, rho: float, softplus: Callable[[Any], Any] = _softplus
) -> tuple[Any, Any]:
    """P(only the first answer good), P(only the second good) under the outcome coupling.

    Independent outcomes mixed (weight ``rho``) with the comonotone coupling, in which both
    answers are good or bad together as far as their odds allow. Works on numpy arrays, or on
    torch tensors with ``softplus=torch.nn.functional.softplus``.
    """
    eps = _COUPLING_SMOOTHING
    up = eps * softplus((pw - pl) / eps)  # smooth max(0, pw - pl)
    down = up - (pw - pl)  # smooth max(0, pl - pw)
    return (1 - rho) * pw * (1 - pl) + rho * up, (1 - rho) * (1 - pw) * pl + rho * down


def graded_terms(
    pw: Any,
    pl: Any,
    dc: Any,
    alpha: Any,
    temp: Any,
    flip: float,
    sigmoid: Callable[[Any], Any] = _sigmoid,
) -> tuple[Any, Any, Any]:
    """Bradley-Terry with slips on the answers' expected qualities (graded answers).

    Works on numpy arrays, or on torch tensors with ``sigmoid=torch.sigmoid``.

    Returns:
        ``(P(win), slope, curvature)``: ``slope = dP/dpw = -dP/dpl`` and ``curvature =
        d2P/dpw2 = d2P/dpl2 = -d2P/(dpw dpl)``.
    """
    scale = alpha / temp
    z = sigmoid(scale * (pw - pl) - (1 - alpha) * dc / temp)
    k = 1.0 - 2.0 * flip
    slope = k * z * (1 - z) * scale
    return flip + k * z, slope, slope * (1 - 2 * z) * scale


@dataclass(frozen=True)
class UserPosterior:
    """The posterior: a mixture over ``(alpha, T, regime)`` of Gaussians over logit offsets.

    An arm's total logit offset on this user's traffic is the shift shared by every arm plus
    its own offset; an arm never compared gets the shift plus fresh prior noise.

    Attributes:
        arms: Names of the compared arms.
        weight: (C,) mixture weights (sum to 1).
        alpha: (C,) quality weight of each component.
        temperature: (C,) Bradley-Terry temperature of each component.
        query_weight: (C,) the component regime's trust in per-query logits.
        arm_sd: (C,) the component regime's prior std of an arm's own offset.
        regime: (C,) index of each component's regime.
        shift_mean: (C,) posterior mean of the shared shift.
        shift_var: (C,) its posterior variance.
        offset_mean: (C, A) posterior mean of each compared arm's total offset.
        offset_var: (C, A) its posterior variance.
    """

    arms: tuple[str, ...]
    weight: np.ndarray
    alpha: np.ndarray
    temperature: np.ndarray
    query_weight: np.ndarray
    arm_sd: np.ndarray
    regime: np.ndarray
    shift_mean: np.ndarray
    shift_var: np.ndarray
    offset_mean: np.ndarray
    offset_var: np.ndarray

    @property
    def alpha_mean(self) -> float:
        """Posterior mean of the quality weight."""
        return float(self.weight @ self.alpha)

    def alpha_distribution(self, grid: np.ndarray) -> np.ndarray:
        """Posterior probability of each value of ``grid`` (the alpha grid it was computed on)."""
        idx = np.abs(self.alpha[:, None] - np.asarray(grid)[None, :]).argmin(1)
        return np.bincount(idx, weights=self.weight, minlength=len(grid))

    def regime_distribution(self, n_regimes: int) -> np.ndarray:
        """Posterior probability of each regime."""
        return np.bincount(self.regime, weights=self.weight, minlength=n_regimes)

    def offsets_for(self, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Total logit offset means and variances (C, K) for candidates ``names``."""
        slot = {n: i for i, n in enumerate(self.arms)}
        k = len(names)
        mean = np.repeat(self.shift_mean[:, None], k, axis=1)
        var = np.repeat((self.shift_var + self.arm_sd**2)[:, None], k, axis=1)
        for j, name in enumerate(names):
            i = slot.get(name)
            if i is not None:
                mean[:, j] = self.offset_mean[:, i]
                var[:, j] = self.offset_var[:, i]
        return mean, np.maximum(var, 1e-9)

    def _blended(self, logits: np.ndarray, base: np.ndarray) -> np.ndarray:
        """Per-component logits (C, M, K) before offsets."""
        lam = self.query_weight[:, None, None]
        return lam * logits[None, :, :] + (1 - lam) * np.asarray(base, np.float64)[None, None, :]

    def expected_utility(
        self, logits: np.ndarray, base: np.ndarray, cost: np.ndarray, names: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Posterior expected utility and expected quality of each candidate on each query.

        Args:
            logits: (M, K) the quality head's logits for the candidates on the queries.
            base: (K,) the candidates' query-blind base logits.
            cost: (M, K) normalised expected costs.
            names: The K candidates' names.

        Returns:
            ``(E[u] (M, K), E[quality] (M, K))``.
        """
        mean, var = self.offsets_for(names)
        # probit approximation of E[sigmoid(l + delta)], delta ~ N(mean, var), per component
        scale = 1.0 / np.sqrt(1.0 + np.pi * var / 8.0)  # (C, K)
        z = (self._blended(logits, base) + mean[:, None, :]) * scale[:, None, :]
        q = _sigmoid(z)
        quality = np.einsum("c,cmk->mk", self.weight, q)
        weighted = np.einsum("c,cmk->mk", self.weight * self.alpha, q)
        return weighted - (1.0 - self.alpha_mean) * cost, quality

    def particles(
        self, n: int, names: Sequence[str], rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``n`` equally weighted draws: component index, alpha, temperature, offsets (n, K)."""
        comp = rng.choice(len(self.weight), size=n, p=self.weight / self.weight.sum())
        mean, var = self.offsets_for(names)
        delta = mean[comp] + np.sqrt(var[comp]) * rng.standard_normal((n, len(names)))
        return comp, self.alpha[comp], self.temperature[comp], delta

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (float32 precision)."""

        def arr(x: np.ndarray) -> list[Any]:
            out: list[Any] = np.asarray(x, np.float32).tolist()
            return out

        return {
            "arms": list(self.arms),
            "weight": arr(self.weight),
            "alpha": arr(self.alpha),
            "temperature": arr(self.temperature),
            "query_weight": arr(self.query_weight),
            "arm_sd": arr(self.arm_sd),
            "regime": [int(r) for r in self.regime],
            "shift_mean": arr(self.shift_mean),
            "shift_var": arr(self.shift_var),
            "offset_mean": arr(self.offset_mean),
            "offset_var": arr(self.offset_var),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UserPosterior:
        """Inverse of :meth:`to_dict`.

        Raises:
            ConfigError: Missing keys, inconsistent shapes or non-finite values.
        """
        try:
            arms = tuple(str(a) for a in data["arms"])
            weight = np.asarray(data["weight"], np.float64)
            c, a = len(weight), len(arms)

            def vec(key: str) -> np.ndarray:
                return np.asarray(data[key], np.float64).reshape(c)

            out = cls(
                arms=arms,
                weight=weight,
                alpha=vec("alpha"),
                temperature=vec("temperature"),
                query_weight=vec("query_weight"),
                arm_sd=vec("arm_sd"),
                regime=np.asarray(data["regime"], np.int64).reshape(c),
                shift_mean=vec("shift_mean"),
                shift_var=vec("shift_var"),
                offset_mean=np.asarray(data["offset_mean"], np.float64).reshape(c, a),
                offset_var=np.asarray(data["offset_var"], np.float64).reshape(c, a),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"malformed user posterior: {exc}") from exc
        numbers = [out.weight, out.alpha, out.temperature, out.query_weight, out.arm_sd]
        numbers += [out.shift_mean, out.shift_var, out.offset_mean, out.offset_var]
        if c == 0 or not all(np.isfinite(x).all() for x in numbers) or (out.weight < 0).any():
            raise ConfigError("malformed user posterior: empty, negative or non-finite values.")
        return out


def _components(config: PosteriorConfig, novelty: float) -> tuple[np.ndarray, ...]:
    """The grid: alpha, T, regime index and log prior weight of every component."""
    alpha = config.alpha_grid
    temps = np.asarray(config.temperatures)
    regimes = np.arange(len(config.regimes))
    a_i, t_i, r_i = (
        g.ravel() for g in np.meshgrid(np.arange(len(alpha)), temps, regimes, indexing="ij")
    )
    pa = np.full(len(alpha), (1.0 - 2 * config.extreme_mass) / (len(alpha) - 2))
    pa[0] = pa[-1] = config.extreme_mass
    if config.extreme_mass == 0:
        pa[:] = 1.0 / len(alpha)
    log_prior = np.log(np.maximum(pa[a_i], 1e-300)) + np.log(config.regime_prior(novelty))[r_i]
    return alpha[a_i], t_i.astype(np.float64), r_i.astype(np.int64), log_prior


def infer_posterior(
    data: ComparisonData, config: PosteriorConfig | None = None, *, novelty: float = 0.0
) -> UserPosterior:
    """The posterior of one user given their comparisons (see the module docstring).

    Args:
        data: The comparisons.
        config: Grids and priors (default :class:`PosteriorConfig`).
        novelty: How unlike the training queries the user's traffic is, in [0, 1] (the prior
            probability of the novel regime).
    """
    cfg = config or PosteriorConfig()
    alpha, temp, reg, log_prior = _components(cfg, novelty)
    lam = np.asarray([cfg.regimes[r].query_weight for r in reg])
    shared_sd = np.asarray([cfg.regimes[r].shared_sd for r in reg])
    arm_sd = np.asarray([cfg.regimes[r].arm_sd for r in reg])
    c, n, na = len(alpha), len(data), len(data.arms)
    d = na + 1  # the shared shift, then one offset per compared arm
    prec = np.concatenate(
        [1.0 / shared_sd[:, None] ** 2, np.repeat(1.0 / arm_sd[:, None] ** 2, na, 1)], 1
    )
    log_sd = np.log(shared_sd) + na * np.log(arm_sd)
    theta = np.zeros((c, d))

    def finish(weight: np.ndarray, theta: np.ndarray, cov: np.ndarray) -> UserPosterior:
        keep = weight >= cfg.prune * weight.max()
        w = weight[keep]
        th, cv = theta[keep], cov[keep]
        diag = np.diagonal(cv, axis1=1, axis2=2)

        def f32(x: np.ndarray) -> np.ndarray:
            # float32 precision, as stored: a state read back from the store routes identically
            return np.asarray(x, np.float32).astype(np.float64)

        return UserPosterior(
            arms=tuple(data.arms),
            weight=f32(w / w.sum()),
            alpha=f32(alpha[keep]),
            temperature=f32(temp[keep]),
            query_weight=f32(lam[keep]),
            arm_sd=f32(arm_sd[keep]),
            regime=reg[keep],
            shift_mean=f32(th[:, 0]),
            shift_var=f32(diag[:, 0]),
            offset_mean=f32(th[:, :1] + th[:, 1:]),
            offset_var=f32(diag[:, :1] + diag[:, 1:] + 2 * cv[:, 0, 1:]),
        )

    if n == 0:
        w = np.exp(log_prior - log_prior.max())
        cov = np.zeros((c, d, d))
        cov[:, np.arange(d), np.arange(d)] = 1.0 / prec
        return finish(w / w.sum(), theta, cov)

    base = np.asarray(data.base, np.float64)
    lam_c = lam[:, None]
    lw = np.clip(
        lam_c * data.win_logit[None] + (1 - lam_c) * base[data.win][None], -_LOGIT_CLIP, _LOGIT_CLIP
    )
    ll = np.clip(
        lam_c * data.lose_logit[None] + (1 - lam_c) * base[data.lose][None],
        -_LOGIT_CLIP,
        _LOGIT_CLIP,
    )
    b0, dplus, dminus = bt_terms(
        (data.win_cost - data.lose_cost)[None, :], alpha[:, None], temp[:, None], cfg.flip_rate
    )
    # design vectors: an answer's logit moves with the shared shift and its arm's own offset
    uw = np.zeros((n, d))
    uw[:, 0] = 1.0
    uw[np.arange(n), 1 + data.win] = 1.0
    ul = np.zeros((n, d))
    ul[:, 0] = 1.0
    ul[np.arange(n), 1 + data.lose] = 1.0
    ww = np.einsum("na,nb->nab", uw, uw).reshape(n, -1)
    lls = np.einsum("na,nb->nab", ul, ul).reshape(n, -1)
    wl = (np.einsum("na,nb->nab", uw, ul) + np.einsum("na,nb->nab", ul, uw)).reshape(n, -1)
    rho = cfg.outcome_coupling
    eps = _COUPLING_SMOOTHING
    eye = np.eye(d)
    share = cfg.graded_share(lam)[:, None]  # (C, 1)
    binary = 1 - share
    dc_seen = (data.win_cost - data.lose_cost)[None, :]

    def terms(th: np.ndarray) -> tuple[np.ndarray, ...]:
        """pw, pl, L and the graded share's slope and curvature per component and comparison."""
        pw = _sigmoid(lw + th @ uw.T)  # (C, N)
        pl = _sigmoid(ll + th @ ul.T)
        p10, p01 = coupled_outcomes(pw, pl, rho)
        like = b0 + p10 * dplus + p01 * dminus
        slope = curve = np.zeros_like(pw)
        if cfg.binary_share < 1:
            g, slope, curve = (
                share * x
                for x in graded_terms(pw, pl, dc_seen, alpha[:, None], temp[:, None], cfg.flip_rate)
            )
            like = binary * like + g
        return pw, pl, np.maximum(like, 1e-12), slope, curve

    def objective(th: np.ndarray) -> np.ndarray:
        return np.log(terms(th)[2]).sum(1) - 0.5 * (prec * th**2).sum(1)

    def partials(th: np.ndarray) -> tuple[np.ndarray, ...]:
        """The likelihood's parts per component and comparison.

        pw, pl, L, the smooth max's slope, dL/dpw, dL/dpl and the graded share's curvature.
        """
        pw, pl, like, slope, curve = terms(th)
        s1 = _sigmoid((pw - pl) / eps)
        l_w = ((1 - rho) * (1 - pl) + rho * s1) * dplus - ((1 - rho) * pl + rho * (1 - s1)) * dminus
        l_l = (
            -((1 - rho) * pw + rho * s1) * dplus + ((1 - rho) * (1 - pw) + rho * (1 - s1)) * dminus
        )
        if cfg.binary_share < 1:
            l_w, l_l = binary * l_w + slope, binary * l_l - slope
        return pw, pl, like, s1, l_w, l_l, curve

    def derivatives(th: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gradient (C, D) and Fisher information plus prior precision (C, D, D)."""
        pw, pl, like, _, l_w, l_l, _ = partials(th)
        a = l_w * pw * (1 - pw)  # dL / d logit of the preferred answer
        b = l_l * pl * (1 - pl)
        grad = (a / like) @ uw + (b / like) @ ul - prec * th
        # each comparison is one Bernoulli outcome with probability L: its Fisher information
        # grad(L) grad(L)^T / (L (1 - L)) is positive semi-definite (Fisher scoring)
        v = np.maximum(like * (1 - like), 1e-9)
        info = ((a * a / v) @ ww + (b * b / v) @ lls + (a * b / v) @ wl).reshape(c, d, d)
        info[:, np.arange(d), np.arange(d)] += prec
        return grad, info

    def observed_information(th: np.ndarray) -> np.ndarray:
        """Minus the Hessian of the log posterior (C, D, D)."""
        pw, pl, like, s1, l_w, l_l, curve = partials(th)
        h = s1 * (1 - s1) / eps  # second derivative of the smooth max
        l_same = binary * rho * h * (dplus + dminus) + curve  # d2L/dpw2 = d2L/dpl2
        l_wl = -binary * ((1 - rho) + rho * h) * (dplus + dminus) - curve
        sw, sl = pw * (1 - pw), pl * (1 - pl)
        gw, gl = l_w * sw / like, l_l * sl / like
        hww = (l_same * sw**2 + l_w * sw * (1 - 2 * pw)) / like - gw**2
        hll = (l_same * sl**2 + l_l * sl * (1 - 2 * pl)) / like - gl**2
        hwl = l_wl * sw * sl / like - gw * gl
        out = -(hww @ ww + hll @ lls + hwl @ wl).reshape(c, d, d)
        out[:, np.arange(d), np.arange(d)] += prec
        return out

    value = objective(theta)
    damping = np.full(c, 1e-3)
    for _ in range(cfg.newton_steps):
        grad, info = derivatives(theta)
        # Fisher scoring with Levenberg-Marquardt damping adapted per grid point
        trial = (
            theta + np.linalg.solve(info + damping[:, None, None] * eye, grad[..., None])[..., 0]
        )
        new = objective(trial)
        better = new > value
        theta = np.where(better[:, None], trial, theta)
        value = np.where(better, new, value)
        damping = np.where(better, damping / 3.0, damping * 4.0)
        if np.abs(grad).max() < 1e-5:
            break
    # Laplace at the mode with the observed information; where the log-likelihood is not
    # concave, no direction may be less certain than the prior (keeps evidence and cov finite)
    vals, vecs = np.linalg.eigh(observed_information(theta))
    vals = np.maximum(vals, prec.min(axis=1, keepdims=True))
    logdet = np.log(vals).sum(axis=1)
    # Laplace evidence (the 2*pi terms cancel against the Gaussian prior's normaliser)
    log_z = value - log_sd - 0.5 * logdet + log_prior
    w = np.exp(log_z - log_z.max())
    cov = np.einsum("cij,cj,ckj->cik", vecs, 1.0 / vals, vecs)
    return finish(w / w.sum(), theta, cov)


def win_probability(
    pw: np.ndarray,
    pl: np.ndarray,
    dc: np.ndarray,
    alpha: np.ndarray,
    temp: np.ndarray,
    config: PosteriorConfig,
    query_weight: np.ndarray | float = 1.0,
) -> np.ndarray:
    """P(the first answer is preferred) for answers good with probabilities ``pw``, ``pl``.

    All arguments broadcast; ``dc`` is the first answer's normalised cost minus the other's;
    ``query_weight`` is the regime's trust in the per-query logits ``pw`` and ``pl`` came from
    (:meth:`PosteriorConfig.graded_share`).
    """
    b0, dplus, dminus = bt_terms(dc, alpha, temp, config.flip_rate)
    p10, p01 = coupled_outcomes(pw, pl, config.outcome_coupling)
    like = b0 + p10 * dplus + p01 * dminus
    if config.binary_share < 1:
        share = config.graded_share(query_weight)
        graded = graded_terms(pw, pl, dc, alpha, temp, config.flip_rate)[0]
        like = (1 - share) * like + share * graded
    return np.clip(like, 0.0, 1.0)


def comparison_value(
    posterior: UserPosterior,
    names: Sequence[str],
    candidate_logits: np.ndarray,
    candidate_cost: np.ndarray,
    traffic_logits: np.ndarray,
    traffic_cost: np.ndarray,
    base: np.ndarray,
    config: PosteriorConfig,
    *,
    pairs: Sequence[tuple[int, int]] | None = None,
    n_particles: int = 256,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Expected value of information of asking the user about each (query, pair).

    The value of a comparison is how much the expected utility of the Bayes routing decision on
    the user's traffic is expected to rise once the user's answer is known (preposterior
    analysis on equally weighted particles of the current posterior, reweighted by each
    possible answer). A comparison worth asking about is one whose answer could change where
    the user's queries go: about their trade-off, or about how an arm does on their traffic.

    Args:
        posterior: The user's current posterior.
        names: The K candidates.
        candidate_logits: (Q, K) quality-head logits of the candidates on the candidate queries.
        candidate_cost: (Q, K) normalised expected costs on the candidate queries.
        traffic_logits: (M, K) logits on a sample of the user's traffic (the decisions valued).
        traffic_cost: (M, K) normalised expected costs on that sample.
        base: (K,) query-blind base logits of the candidates.
        config: The posterior config (likelihood settings).
        pairs: Candidate pairs (default: every pair).
        n_particles: Particles drawn from the posterior.
        rng: Random generator (default: seeded from the inputs, so the choice is repeatable).

    Returns:
        (Q, len(pairs)) expected gain in mean utility per routed query (>= 0 up to noise).
    """
    k = len(names)
    pairs = (
        list(pairs) if pairs is not None else [(i, j) for i in range(k) for j in range(i + 1, k)]
    )
    rng = rng or np.random.default_rng(len(posterior.weight) * 7919 + candidate_logits.size)
    comp, alpha, temp, delta = posterior.particles(n_particles, names, rng)
    lam = posterior.query_weight[comp]
    b = np.asarray(base, np.float64)

    def quality(logits: np.ndarray) -> np.ndarray:  # (P, M, K)
        blended = lam[:, None, None] * logits[None] + (1 - lam[:, None, None]) * b[None, None]
        return _sigmoid(blended + delta[:, None, :])

    q_t = quality(traffic_logits)
    util = alpha[:, None, None] * q_t - (1 - alpha[:, None, None]) * traffic_cost[None]
    flat = util.reshape(len(alpha), -1)  # (P, M*K)
    m = traffic_logits.shape[0]

    def value(weights: np.ndarray) -> np.ndarray:  # (..., P) -> (...)
        eu = (weights @ flat).reshape(*weights.shape[:-1], m, k)
        return eu.max(-1).mean(-1)

    prior_value = value(np.full(len(alpha), 1.0 / len(alpha)))
    q_c = quality(candidate_logits)  # (P, Q, K)
    out = np.zeros((candidate_logits.shape[0], len(pairs)))
    for j, (a, bb) in enumerate(pairs):
        dc = candidate_cost[:, a] - candidate_cost[:, bb]  # (Q,)
        p_a = win_probability(
            q_c[:, :, a],
            q_c[:, :, bb],
            dc[None, :],
            alpha[:, None],
            temp[:, None],
            config,
            lam[:, None],
        ).T  # (Q, P)
        post = np.stack([p_a, 1 - p_a])  # (2, Q, P): answer "a" or "b"
        marginal = post.mean(-1)  # (2, Q)
        weights = post / np.maximum(post.sum(-1, keepdims=True), 1e-12)
        out[:, j] = (marginal * value(weights)).sum(0) - prior_value
    return out
