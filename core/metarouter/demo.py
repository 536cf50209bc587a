"""``metarouter demo``: three simulated users with hidden tastes teach the bundled router.

Each user answers six "which answer was worth it?" comparisons about queries from their own
recent traffic (100 queries of the bundled LLMRouter test split, which the router never trained
on); as with the adapters' ``compare()``, the router picks which query and which two answers to
show (the comparison worth most to this user's routing, see ``MetaRouter.comparison_values``).
The router infers the user's posterior from them, then routes the rest of those held-out
queries for that user; we compare the result with always-cheapest, always-strongest, the best
single model for that user in hindsight, and the per-query oracle for that user.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from metarouter.data import load_dataset
from metarouter.novelty import RECENT_TRAFFIC
from metarouter.pricing import estimate_tokens
from metarouter.profiles import LinearProfile, simulate_preferences
from metarouter.router import MetaRouter
from metarouter.types import Comparison, Preference

__all__ = ["DEMO_CANDIDATES", "DEMO_USERS", "DemoResult", "UserResult", "run_demo"]

DEMO_CANDIDATES = (
    "gemma-2-9b-it",
    "llama-3.1-8b-instruct",
    "mistral-7b-instruct-v0.3",
    "llama-3.3-nemotron-super-49b-v1",
    "llama-3.1-nemotron-51b-instruct",
)
#: name -> hidden weight on quality (alpha)
DEMO_USERS = {"frugal": 0.05, "balanced": 0.5, "quality-first": 0.95}


@dataclass
class Outcome:
    """Mean cost (USD), quality and utility of one routing policy on the scored queries."""

    cost: float
    quality: float
    utility: float


@dataclass
class UserResult:
    """What happened for one simulated user."""

    name: str
    alpha: float
    comparisons: list[tuple[str, str, str, float, float]]  # query, winner, loser, costs
    preference: Preference
    metarouter: Outcome
    baselines: dict[str, Outcome]
    traffic: dict[str, float] = field(default_factory=dict)


@dataclass
class DemoResult:
    """All users, plus where the plot went."""

    users: list[UserResult]
    n_scored: int
    plot: Path | None


def _outcome(choice: np.ndarray, q: np.ndarray, c: np.ndarray, u: np.ndarray) -> Outcome:
    rows = np.arange(len(choice))
    return Outcome(
        float(c[rows, choice].mean()), float(q[rows, choice].mean()), float(u[rows, choice].mean())
    )


def run_demo(
    router: MetaRouter | None = None,
    *,
    out: str | Path | None = None,
    seed: int = 0,
    n_comparisons: int = 6,
    active: bool = True,
) -> DemoResult:
    """Run the demo (see module docstring); writes ``demo.png`` into ``out`` if given.

    Args:
        router: The router (default: the bundled one).
        out: Folder for the plot.
        seed: Random seed (queries, the users' noisy answers).
        n_comparisons: Comparisons per user.
        active: Let the router pick each compared query and pair (as ``compare()`` does),
            instead of a random query and pair.
    """
    router = router or MetaRouter.default()
    test = load_dataset("llmrouter").to_matrix().split("test").select_models(DEMO_CANDIDATES)
    emb = router.embedder.encode(list(test.queries))
    tokens = np.asarray([estimate_tokens(q) for q in test.queries], float)
    tau = router.config.cost_scale_usd
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(test))
    pool, scored = perm[:100], np.sort(perm[100:])
    recent = emb[pool[:RECENT_TRAFFIC]]  # each user's recent traffic, as the service reads it
    q, c = test.quality[scored], test.cost[scored]
    users = []
    for name, alpha in DEMO_USERS.items():
        profile = LinearProfile(alpha)
        util_all = profile.utility(test.quality, test.cost, tau)
        comps: list[Comparison] = []
        shown: list[tuple[str, str, str, float, float]] = []
        pref = router.prior(router.novelty(emb[pool]))
        asked: set[int] = set()
        for _ in range(n_comparisons):
            if active:  # the comparison worth most to this user's routing (compare()'s choice)
                values, pairs = router.comparison_values(
                    emb[pool], tokens[pool], DEMO_CANDIDATES, pref, seed=len(comps)
                )
                values[sorted(asked)] = -np.inf  # ask about each query once
                q_i, p_i = np.unravel_index(int(np.argmax(values)), values.shape)
                r = int(pool[q_i])
                a, b = pairs[int(p_i)]
                asked.add(int(q_i))
            else:
                r = int(rng.choice(np.setdiff1d(pool, pool[sorted(asked)])))
                asked.add(int(np.flatnonzero(pool == r)[0]))
                a, b = rng.choice(len(DEMO_CANDIDATES), 2, replace=False)
            a_wins = bool(
                simulate_preferences(util_all[r, a], util_all[r, b], temperature=0.05, rng=rng)
            )
            w, lo = (a, b) if a_wins else (b, a)
            comps.append(
                Comparison(
                    DEMO_CANDIDATES[w],
                    DEMO_CANDIDATES[lo],
                    test.cost[r, w],
                    test.cost[r, lo],
                    embedding=emb[r],
                    tokens=int(tokens[r]),
                )
            )
            shown.append(
                (
                    str(test.queries[r]),
                    DEMO_CANDIDATES[w],
                    DEMO_CANDIDATES[lo],
                    float(test.cost[r, w]),
                    float(test.cost[r, lo]),
                )
            )
            pref = router.adapt(comps, traffic=recent)
        probs, _, _ = router.score_embeddings(emb[scored], tokens[scored], DEMO_CANDIDATES, pref)
        choice = probs.argmax(axis=1)
        u = profile.utility(q, c, tau)
        cheap = int(np.argmin(c.mean(0)))
        strong = int(np.argmax(q.mean(0)))
        best = int(np.argmax(u.mean(0)))
        oracle = (u - 1e-9 * c).argmax(axis=1)
        users.append(
            UserResult(
                name=name,
                alpha=alpha,
                comparisons=shown,
                preference=pref,
                metarouter=_outcome(choice, q, c, u),
                baselines={
                    f"always {DEMO_CANDIDATES[cheap]} (cheapest)": _outcome(
                        np.full(len(q), cheap), q, c, u
                    ),
                    f"always {DEMO_CANDIDATES[strong]} (strongest)": _outcome(
                        np.full(len(q), strong), q, c, u
                    ),
                    f"always {DEMO_CANDIDATES[best]} (best single model for this user, in "
                    "hindsight)": _outcome(np.full(len(q), best), q, c, u),
                    "oracle for this user": _outcome(oracle, q, c, u),
                },
                traffic={m: float((choice == k).mean()) for k, m in enumerate(DEMO_CANDIDATES)},
            )
        )
    plot = _plot(users, Path(out)) if out is not None else None
    return DemoResult(users, len(scored), plot)


def _plot(users: list[UserResult], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(users), figsize=(4.6 * len(users), 4), sharey=True)
    for ax, user in zip(np.atleast_1d(axes), users, strict=True):
        for label, o in user.baselines.items():
            marker = "*" if label.startswith("oracle") else "s"
            ax.scatter(o.cost * 1e6, o.quality, marker=marker, s=90, label=label)
        m = user.metarouter
        ax.scatter(
            m.cost * 1e6,
            m.quality,
            color="C3",
            s=140,
            edgecolor="k",
            label="MetaRouter (6 comparisons)",
            zorder=5,
        )
        ax.set(
            title=f"{user.name} (hidden alpha = {user.alpha}, inferred "
            f"{user.preference.quality_weight:.2f})",
            xlabel="mean cost per query (micro-USD)",
            ylabel="mean quality",
        )
        ax.title.set_fontsize(9)
        ax.legend(fontsize=6, loc="lower right")
    fig.suptitle("MetaRouter after six comparisons, on held-out LLMRouter queries", fontsize=10)
    fig.tight_layout()
    path = out / "demo.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
