"""Simulated users: hidden preference profiles and the Bradley-Terry comparisons they give.

A profile maps an answer's quality q in [0, 1] and normalised cost c~ = min(c / tau, 1) to a
utility. Training uses the linear family ``u = alpha * q - (1 - alpha) * c~`` with
alpha ~ U(0, 1); evaluation adds non-linear families never seen in training (a hard budget cap
and a quality floor). A simulated user prefers answer i over j with probability
``sigmoid((u_i - u_j) / T)``, and a fraction of labels may be flipped (noise).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from metarouter.errors import ConfigError

__all__ = [
    "BudgetCapProfile",
    "LinearProfile",
    "Profile",
    "QualityFloorProfile",
    "normalised_cost",
    "simulate_preferences",
]


def normalised_cost(cost_usd: np.ndarray, tau: float) -> np.ndarray:
    """c~ = min(c / tau, 1): cost in units of the pool's cost scale ``tau`` (USD), capped at 1."""
    if not tau > 0:
        raise ConfigError(f"cost scale tau must be > 0 USD, got {tau!r}.")
    return np.minimum(np.asarray(cost_usd, dtype=np.float64) / tau, 1.0)


class Profile(ABC):
    """A hidden preference: utility of (quality, cost) pairs."""

    @abstractmethod
    def utility(self, quality: np.ndarray, cost_usd: np.ndarray, tau: float) -> np.ndarray:
        """Utility of answers with the given quality and cost (same shapes)."""

    @property
    @abstractmethod
    def label(self) -> str:
        """A short human-readable name."""


@dataclass(frozen=True)
class LinearProfile(Profile):
    """``u = alpha * q - (1 - alpha) * c~``: alpha is the weight on quality vs money.

    Attributes:
        alpha: 0 = only cost matters, 1 = only quality matters.
    """

    alpha: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1], got {self.alpha!r}.")

    def utility(self, quality: np.ndarray, cost_usd: np.ndarray, tau: float) -> np.ndarray:
        """Linear utility."""
        return self.alpha * np.asarray(quality) - (1 - self.alpha) * normalised_cost(cost_usd, tau)

    @property
    def label(self) -> str:
        """``alpha=0.35``."""
        return f"alpha={self.alpha:.2f}"


@dataclass(frozen=True)
class BudgetCapProfile(Profile):
    """Quality matters, but a call above ``cap`` (in units of tau) is unacceptable.

    ``u = q - 0.1 * c~`` when ``c~ <= cap``, else ``-1``: a user with a hard per-call budget.
    Non-linear in cost; never seen in training.
    """

    cap: float

    def utility(self, quality: np.ndarray, cost_usd: np.ndarray, tau: float) -> np.ndarray:
        """Budget-capped utility."""
        c = normalised_cost(cost_usd, tau)
        return np.where(c <= self.cap, np.asarray(quality) - 0.1 * c, -1.0)

    @property
    def label(self) -> str:
        """``budget<=0.20``."""
        return f"budget<={self.cap:.2f}"


@dataclass(frozen=True)
class QualityFloorProfile(Profile):
    """Cheapest acceptable answer: ``u = 1 - c~`` if ``q >= floor``, else ``-c~ - 0.5``.

    A user who only needs answers that are good enough. Non-linear in quality; never seen in
    training.
    """

    floor: float = 0.5

    def utility(self, quality: np.ndarray, cost_usd: np.ndarray, tau: float) -> np.ndarray:
        """Quality-floor utility."""
        c = normalised_cost(cost_usd, tau)
        return np.where(np.asarray(quality) >= self.floor, 1.0 - c, -c - 0.5)

    @property
    def label(self) -> str:
        """``floor>=0.50``."""
        return f"floor>={self.floor:.2f}"


def simulate_preferences(
    utility_a: np.ndarray,
    utility_b: np.ndarray,
    *,
    temperature: float,
    flip_rate: float = 0.0,
    rng: np.random.Generator,
) -> np.ndarray:
    """Bradley-Terry labels: True where the user prefers answer a over answer b.

    Args:
        utility_a: Utility of the first answer of each pair.
        utility_b: Utility of the second answer.
        temperature: T > 0; smaller is a more decisive user.
        flip_rate: Probability that a label is flipped afterwards (annotation noise).
        rng: Random generator.
    """
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature!r}.")
    if not 0.0 <= flip_rate < 0.5:
        raise ConfigError(f"flip_rate must be in [0, 0.5), got {flip_rate!r}.")
    diff = (np.asarray(utility_a) - np.asarray(utility_b)) / temperature
    p = 1.0 / (1.0 + np.exp(-np.clip(diff, -50, 50)))
    prefers_a = rng.random(p.shape) < p
    flips = rng.random(p.shape) < flip_rate
    return prefers_a ^ flips
