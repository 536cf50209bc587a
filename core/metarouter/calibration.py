"""Meta-learning the adaptation prior from the training data's task groups.

How far can an arm's quality on one user's traffic be from what the router predicts? It depends
on whether the traffic is like the training queries, and the training data can tell, by
treating its own task groups (task families, or query clusters when the table has no task
column) as users' traffic:

* **familiar regime** (the quality head's per-query logits): on held-out validation queries, per
  group, the gap between each arm's observed mean quality and the head's mean prediction, split
  into a shift shared by the arms and per-arm offsets;
* **novel regime** (query-blind base logits, an arm's overall ability): per group, the gap
  between each arm's mean quality on that group and its mean over the *other* groups, split the
  same way. This is how much a new task moves the arms, measured across the tasks we have;
* **outcome coupling**: how much more often two arms succeed or fail together on a query than
  independence predicts, given the head's probabilities (method of moments);
* **binary share**: how much of the outcomes' spread around the head's probabilities is
  pass/fail. Graded outcomes (a judge's score, a share of tests passed, a mean over samples)
  lie between 0 and 1, and a user compares such answers by about their expected quality.
  ``1 - E[q (1 - q)] / E[p (1 - p)]``: 1 on 0/1 outcomes, 0 if every answer scored exactly its
  expectation.

Sampling noise is subtracted from every spread, and each is floored, so a table with few groups
still gives a usable, wide-enough prior. The novel regime's spread is measured from few
independent task families (often 2-15), so it is read conservatively: the 90% upper confidence
bound of a standard deviation estimated from that many families (``sd * sqrt(df /
chi2_0.1(df))``, df = families - 1), capped at :data:`MAX_NOVEL_SD`. A table with many families
keeps about its measured spread; one with two or three (where the groups are query clusters of
the same few tasks) cannot tell how far a new task moves the arms and gets a wide prior. The
result is a
:class:`~metarouter.posterior.PosteriorConfig` saved with the router.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from metarouter.posterior import PosteriorConfig, Regime

__all__ = ["AdaptationFit", "base_logit", "fit_posterior_config", "task_groups"]

logger = logging.getLogger(__name__)

#: Smallest group (queries) whose mean quality enters the spread estimates.
MIN_GROUP = 20
#: Floors of the fitted standard deviations (logit units).
MIN_SD = 0.15
#: Floor of the novel regime's standard deviations (logit units): a task family unlike every
#: training family can move an arm's odds of a good answer by a factor of e^1.5 ~ 4.5 or more
#: (on code, RouterBench's Yi-34B falls from 84% to 40% while GPT-3.5 holds at 65%). Held-out
#: training families are closer to the rest than such tasks are, so on data with few families
#: the measured spread alone is too narrow (docs/evaluation.md, "width of the novel regime").
MIN_NOVEL_SD = 1.5
#: Cap of the novel regime's standard deviations (logit units): at 3, a new task may move an
#: arm's odds of a good answer by a factor of e^3 ~ 20, i.e. from 90% to 30%.
MAX_NOVEL_SD = 3.0
#: One-sided confidence of the upper bound on the novel regime's spread.
_SPREAD_CONFIDENCE = 0.9
_P_CLIP = 0.02


def base_logit(mean_quality: np.ndarray | float) -> np.ndarray:
    """The query-blind base logit of arms with the given mean quality (clipped to [2%, 98%])."""
    p = np.clip(np.asarray(mean_quality, np.float64), _P_CLIP, 1 - _P_CLIP)
    return np.log(p / (1 - p))


def task_groups(tasks: np.ndarray, embeddings: np.ndarray, seed: int = 0) -> np.ndarray:
    """Group labels (n,): task families when there are at least three, else 8 query clusters."""
    labels, counts = np.unique(tasks, return_counts=True)
    if (counts >= MIN_GROUP).sum() >= 3:
        return np.searchsorted(labels, tasks).astype(np.int64)
    from sklearn.cluster import KMeans

    n = min(8, max(2, len(embeddings) // (2 * MIN_GROUP)))
    return (
        KMeans(n_clusters=n, n_init=2, random_state=seed).fit(embeddings).labels_.astype(np.int64)
    )


@dataclass(frozen=True)
class AdaptationFit:
    """The fitted prior and the figures it came from (recorded in training.json)."""

    config: PosteriorConfig
    familiar: dict[str, float]
    novel: dict[str, float]
    coupling: float
    groups: int
    binary_share: float = 1.0


def _spread(gaps: np.ndarray, noise: np.ndarray) -> tuple[float, float]:
    """Shared and per-arm std of (G, A) logit gaps, minus their sampling noise (G, A)."""
    shared = gaps.mean(axis=1)
    own = gaps - shared[:, None]
    shared_var = float(np.mean(shared**2) - np.mean(noise.mean(axis=1) / gaps.shape[1]))
    own_var = float(np.mean(own**2) - np.mean(noise) * (1 - 1 / gaps.shape[1]))
    return float(np.sqrt(max(shared_var, MIN_SD**2))), float(np.sqrt(max(own_var, MIN_SD**2)))


def _upper_sd(sd: float, families: int) -> float:
    """The upper confidence bound of a std measured across ``families`` independent groups."""
    from scipy.stats import chi2

    df = max(families - 1, 1)
    return float(sd * np.sqrt(df / chi2.ppf(1 - _SPREAD_CONFIDENCE, df)))


def _logit_noise(p: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Sampling variance of the logit of a mean of ``n`` Bernoulli(p) outcomes."""
    p = np.clip(p, _P_CLIP, 1 - _P_CLIP)
    return 1.0 / (np.maximum(n, 1) * p * (1 - p))


def _coupling(quality: np.ndarray, prob: np.ndarray) -> float:
    """Method-of-moments outcome coupling: the mixing weight of the comonotone coupling."""
    good = (quality > 0.5).astype(np.float64)
    k = quality.shape[1]
    rhos = []
    eps = 0.02
    for i in range(k):
        for j in range(k):
            if i == j:
                continue
            observed = float((good[:, i] * (1 - good[:, j])).mean())
            independent = float((prob[:, i] * (1 - prob[:, j])).mean())
            comonotone = float((eps * np.logaddexp(0.0, (prob[:, i] - prob[:, j]) / eps)).mean())
            if abs(independent - comonotone) > 1e-3:
                rhos.append((independent - observed) / (independent - comonotone))
    return float(np.clip(np.median(rhos), 0.0, 0.8)) if rhos else 0.0


def _binary_share(quality: np.ndarray, prob: np.ndarray) -> float:
    """Share of the outcomes' Bernoulli spread that is pass/fail (see the module docstring)."""
    q = np.clip(np.asarray(quality, np.float64), 0.0, 1.0)
    spread = float(np.mean(prob * (1 - prob)))
    if spread <= 0:
        return 1.0
    return float(np.clip(1.0 - np.mean(q * (1 - q)) / spread, 0.0, 1.0))


def fit_posterior_config(
    train_quality: np.ndarray,
    train_groups: np.ndarray,
    val_quality: np.ndarray,
    val_prob: np.ndarray,
    val_groups: np.ndarray,
    *,
    families: int | None = None,
    base: PosteriorConfig | None = None,
) -> AdaptationFit:
    """Fit the two regimes, the outcome coupling and the binary share (see the module docstring).

    Args:
        train_quality: (n, A) outcomes of the training queries.
        train_groups: (n,) their task groups.
        val_quality: (m, A) outcomes of held-out validation queries.
        val_prob: (m, A) the trained quality head's probabilities on them.
        val_groups: (m,) their task groups.
        families: Independent task families behind the groups (default: the number of groups
            measured); fewer when the groups are query clusters of a few tasks.
        base: Grids and other settings to keep (default :class:`PosteriorConfig`).
    """
    cfg = base or PosteriorConfig()
    # familiar: the head's per-group bias on held-out queries
    fam_gaps, fam_noise = [], []
    for g in np.unique(val_groups):
        rows = val_groups == g
        if rows.sum() < MIN_GROUP:
            continue
        observed, predicted = val_quality[rows].mean(0), val_prob[rows].mean(0)
        fam_gaps.append(base_logit(observed) - base_logit(predicted))
        fam_noise.append(_logit_noise(predicted, np.full(len(predicted), rows.sum())))
    if fam_gaps:
        fam_shared, fam_arm = _spread(np.asarray(fam_gaps), np.asarray(fam_noise))
    else:
        fam_shared = fam_arm = 0.3
    # novel: each group's arm means against the other groups' (leave one group out)
    nov_gaps, nov_noise = [], []
    for g in np.unique(train_groups):
        rows = train_groups == g
        if rows.sum() < MIN_GROUP or (~rows).sum() < MIN_GROUP:
            continue
        inside, outside = train_quality[rows].mean(0), train_quality[~rows].mean(0)
        nov_gaps.append(base_logit(inside) - base_logit(outside))
        nov_noise.append(_logit_noise(inside, np.full(len(inside), rows.sum())))
    if len(nov_gaps) >= 2:
        nov_shared, nov_arm = _spread(np.asarray(nov_gaps), np.asarray(nov_noise))
    else:
        nov_shared = nov_arm = 1.0
    measured = {"measured_shared_sd": nov_shared, "measured_arm_sd": nov_arm}
    n_families = max(2, families if families is not None else len(nov_gaps))
    # few families measure the spread poorly: plan for its upper confidence bound (capped);
    # a new task is at least as uncertain as a familiar one, and at least MIN_NOVEL_SD
    nov_shared = max(min(_upper_sd(nov_shared, n_families), MAX_NOVEL_SD), fam_shared, MIN_NOVEL_SD)
    nov_arm = max(min(_upper_sd(nov_arm, n_families), MAX_NOVEL_SD), fam_arm, MIN_NOVEL_SD)
    coupling = _coupling(val_quality, val_prob) if len(val_quality) >= MIN_GROUP else 0.0
    binary = _binary_share(val_quality, val_prob) if len(val_quality) >= MIN_GROUP else 1.0
    regimes = (
        Regime("familiar", 1.0, round(fam_shared, 4), round(fam_arm, 4)),
        Regime("novel", 0.0, round(nov_shared, 4), round(nov_arm, 4)),
    )
    fitted = replace(
        cfg, regimes=regimes, outcome_coupling=round(coupling, 4), binary_share=round(binary, 4)
    )
    logger.info(
        "adaptation prior: familiar sd %.2f/%.2f, novel sd %.2f/%.2f (measured %.2f/%.2f), "
        "coupling %.2f, binary share %.2f (%d groups, %d task families)",
        fam_shared,
        fam_arm,
        nov_shared,
        nov_arm,
        measured["measured_shared_sd"],
        measured["measured_arm_sd"],
        coupling,
        binary,
        len(nov_gaps),
        n_families,
    )
    return AdaptationFit(
        fitted,
        {"shared_sd": fam_shared, "arm_sd": fam_arm},
        {"shared_sd": nov_shared, "arm_sd": nov_arm, **measured},
        coupling,
        len(nov_gaps),
        binary,
    )
