"""How unlike the training queries a user's traffic is: the prior odds of the novel regime.

A query's *familiarity* is the mean cosine similarity to its ``k`` nearest neighbours in a
reference sample of the training queries' embeddings (stored with the router). Whether a given
familiarity means "new task" depends on the data, so the mapping to a probability is learned
when the router is trained: a logistic regression separates the familiarity of held-out
training queries (familiar traffic) from that of queries whose whole task group was removed
from the reference sample (novel traffic). A user's novelty combines the evidence of all the
queries they compared, read from a sample of their recent traffic where one is known
(:meth:`NoveltyModel.traffic_novelty`).

References:
    Sun et al. (2022), "Out-of-distribution detection with deep nearest neighbors".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metarouter.errors import ConfigError

__all__ = ["RECENT_TRAFFIC", "NoveltyModel", "familiarity", "fit_novelty"]

#: Bounds of one query's P(novel) when a user's queries are combined (odds of at most 49:1).
_QUERY_FLOOR = 0.02
#: Neighbours averaged for a query's familiarity.
DEFAULT_NEIGHBOURS = 10
#: How many of a user's recent queries stand for their traffic when their novelty is read
#: (:meth:`NoveltyModel.traffic_novelty`, ``traffic``): the service's last routed queries, the
#: evaluation's and the demo's sample of each user's pool.
RECENT_TRAFFIC = 40


def familiarity(embeddings: np.ndarray, reference: np.ndarray, k: int) -> np.ndarray:
    """Mean cosine similarity (n,) of each embedding to its ``k`` nearest reference rows.

    Args:
        embeddings: (n, d) unit-norm query embeddings.
        reference: (r, d) unit-norm reference embeddings.
        k: Neighbours (capped at the reference size).
    """
    emb = np.asarray(embeddings, np.float32).reshape(-1, reference.shape[1])
    if len(reference) == 0 or len(emb) == 0:
        return np.zeros(len(emb))
    sim = emb @ np.asarray(reference, np.float32).T
    k = max(1, min(k, sim.shape[1]))
    top = np.partition(sim, sim.shape[1] - k, axis=1)[:, -k:]
    return top.mean(axis=1).astype(np.float64)


@dataclass(frozen=True)
class NoveltyModel:
    """P(novel | familiarity) = sigmoid(slope * familiarity + intercept).

    Attributes:
        slope: Logistic slope (negative: the more familiar, the less novel).
        intercept: Logistic intercept.
        neighbours: ``k`` of :func:`familiarity`.
    """

    slope: float = 0.0
    intercept: float = -4.0
    neighbours: int = DEFAULT_NEIGHBOURS

    def probability(self, embeddings: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """P(novel) of each query (n,)."""
        fam = familiarity(embeddings, reference, self.neighbours)
        return 1.0 / (1.0 + np.exp(-(self.slope * fam + self.intercept)))

    def traffic_novelty(
        self,
        embeddings: np.ndarray,
        reference: np.ndarray,
        *,
        traffic: np.ndarray | None = None,
    ) -> float:
        """P(novel) of a user's traffic given these of its queries.

        Each query's log odds (a log likelihood ratio: the model is fitted on balanced classes)
        adds up, as for independent observations of one regime, from even prior odds; each
        query's odds are capped at 49:1 either way so no single query decides alone. Without
        queries: 0.5 (or the flat prior of a model without task groups).

        With ``traffic`` (embeddings of more of the user's queries, e.g. their recent routed
        traffic), the evidence keeps the weight of ``len(embeddings)`` queries, but each
        query's log odds is the mean over ``embeddings`` and ``traffic`` together: the same
        strength of belief, read from a larger sample of the user's traffic, so a few unusual
        compared queries no longer decide the regime alone.
        """
        if self.slope == 0:
            return float(1 / (1 + np.exp(-self.intercept)))
        if len(embeddings) == 0:
            return 0.5
        sample = np.asarray(embeddings)
        pooled = traffic is not None and len(traffic) > 0
        if pooled:
            sample = np.vstack([sample, np.asarray(traffic, sample.dtype)])
        p = np.clip(self.probability(sample, reference), _QUERY_FLOOR, 1 - _QUERY_FLOOR)
        each = np.log(p / (1 - p))
        log_odds = float(each.mean()) * len(embeddings) if pooled else float(each.sum())
        return float(1 / (1 + np.exp(-np.clip(log_odds, -30, 30))))

    def to_dict(self) -> dict[str, float | int]:
        """JSON-ready form."""
        return {"slope": self.slope, "intercept": self.intercept, "neighbours": self.neighbours}

    @classmethod
    def from_dict(cls, data: dict[str, float | int]) -> NoveltyModel:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(float(data["slope"]), float(data["intercept"]), int(data["neighbours"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"malformed novelty model: {exc}") from exc


def fit_novelty(
    reference: np.ndarray,
    reference_groups: np.ndarray,
    familiar: np.ndarray,
    *,
    neighbours: int = DEFAULT_NEIGHBOURS,
) -> NoveltyModel:
    """Learn the familiarity -> P(novel) mapping from the training queries.

    Args:
        reference: (r, d) the reference sample (training-query embeddings).
        reference_groups: (r,) task group of each reference row (task family or cluster).
        familiar: (n, d) embeddings of held-out training queries (not in the reference): the
            familiar examples. The novel examples are reference rows scored against the
            reference without their own group.
        neighbours: ``k`` of :func:`familiarity`.

    Returns:
        The fitted model (a flat, low prior of novelty when there are fewer than two groups).
    """
    from sklearn.linear_model import LogisticRegression

    groups = np.unique(reference_groups)
    if len(groups) < 2 or len(familiar) == 0:
        return NoveltyModel(0.0, -4.0, neighbours)
    pos = np.concatenate(
        [
            familiarity(
                reference[reference_groups == g], reference[reference_groups != g], neighbours
            )
            for g in groups
        ]
    )
    neg = familiarity(familiar, reference, neighbours)
    x = np.r_[pos, neg][:, None]
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    weight = np.r_[np.full(len(pos), 0.5 / len(pos)), np.full(len(neg), 0.5 / len(neg))]
    clf = LogisticRegression(C=10.0).fit(x, y, sample_weight=weight * len(y))
    return NoveltyModel(float(clf.coef_[0, 0]), float(clf.intercept_[0]), neighbours)
