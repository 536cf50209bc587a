"""Record factories and the worker processes of the store tests (importable by spawned children).

Workers write straight through :class:`SQLStore` with precomputed random unit embeddings: no
text is embedded, no torch is loaded.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from metarouter.router import default_router_dir
from metarouter.store import ComparisonRecord, DecisionRecord, SQLStore, new_id, query_hash

MODELS = ("gemma-2-9b-it", "qwen2.5-7b-instruct", "llama-3.1-nemotron-51b-instruct")
COST = {"gemma-2-9b-it": 0.0001, "qwen2.5-7b-instruct": 0.0002}
COST["llama-3.1-nemotron-51b-instruct"] = 0.0009


QUERIES = [
    "Prove that there are infinitely many prime numbers.",
    "Translate 'good morning, how are you?' into French.",
    "Write a Python function that merges two sorted lists.",
    "What is the capital of Australia?",
    "Summarise the causes of the French Revolution in three sentences.",
    "Solve for x: 3x + 7 = 22.",
    "Explain the difference between TCP and UDP.",
    "Write a haiku about autumn rain.",
    "What does the mitochondria do in a cell?",
    "Give me a SQL query that counts orders per customer.",
    "Is 221 a prime number? Explain.",
    "Suggest three names for a coffee shop.",
]
#: A population's taste: qwen first whatever it costs, then the cheap gemma, then nemotron.
QWEN_FIRST = {MODELS[1]: 0, MODELS[0]: 1, MODELS[2]: 2}


def _seed(text: str) -> int:
    return int(query_hash(text)[:8], 16)


#: Width of the bundled router's query vectors (its embedder's).
ROUTER_DIM = int(
    json.loads((default_router_dir() / "config.json").read_text())["config"]["embedding_dim"]
)


def unit_vectors(n: int, seed: int, dim: int = ROUTER_DIM) -> np.ndarray:
    """``n`` random unit vectors (float32)."""
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


def make_decision(
    user_id: str,
    /,
    *,
    query: str = "what is 2+2?",
    chosen: str = MODELS[0],
    embedding: np.ndarray | None = None,
    **overrides: Any,
) -> DecisionRecord:
    fields: dict[str, Any] = {
        "decision_id": new_id(),
        "user_id": user_id,
        "query_hash": query_hash(query),
        "embedding": unit_vectors(1, _seed(query))[0] if embedding is None else embedding,
        "prompt_tokens": 7,
        "candidates": MODELS,
        "scores": {m: 1 / len(MODELS) for m in MODELS},
        "chosen": chosen,
        "expected_cost_usd": COST.get(chosen, 0.0005),
        "metadata": {"app": "tests"},
    }
    fields.update(overrides)
    return DecisionRecord(**fields)


def make_comparison(
    user_id: str,
    winner: DecisionRecord | str,
    loser: DecisionRecord | str,
    /,
    *,
    query: str = "what is 2+2?",
    embedding: np.ndarray | None = None,
    **overrides: Any,
) -> ComparisonRecord:
    """A comparison between two decisions, or two model names (an external comparison)."""
    w_dec = winner if isinstance(winner, DecisionRecord) else None
    l_dec = loser if isinstance(loser, DecisionRecord) else None
    w_name = w_dec.chosen if w_dec else str(winner)
    l_name = l_dec.chosen if l_dec else str(loser)
    source_dec = w_dec or l_dec
    if embedding is None:
        embedding = source_dec.embedding if source_dec else unit_vectors(1, _seed(query))[0]
    fields: dict[str, Any] = {
        "comparison_id": new_id(),
        "user_id": user_id,
        "winner": w_name,
        "loser": l_name,
        "winner_cost_usd": COST.get(w_name, 0.0005),
        "loser_cost_usd": COST.get(l_name, 0.0005),
        "query_hash": source_dec.query_hash if source_dec else query_hash(query),
        "embedding": embedding,
        "prompt_tokens": 7,
        "source": "decisions" if source_dec else "external",
        "winner_decision_id": w_dec.decision_id if w_dec else None,
        "loser_decision_id": l_dec.decision_id if l_dec else None,
    }
    fields.update(overrides)
    return ComparisonRecord(**fields)


def snapshot(store: SQLStore) -> dict[str, Any]:
    """Everything a failed write must leave unchanged: counts, versions, ids, cache."""
    users = store.users()
    rows = list(store.iter_records())
    return {
        "stats": store.stats(),
        "versions": {u: store.user_version(u) for u in users},
        "ids": sorted(
            getattr(r, "decision_id", None) or getattr(r, "comparison_id", "") for r in rows
        ),
        "decisions": {
            r.decision_id: (r.chosen, r.cost_usd, r.fallbacks)
            for r in rows
            if isinstance(r, DecisionRecord)
        },
    }


def concurrent_writer(
    url: str, worker: int, n_writes: int, users: list[str], out: str, start: Any
) -> None:
    """Write ``n_writes`` interleaved decisions and comparisons; log each committed write.

    Writes come in triples for one user (users rotate, so workers overlap): two decisions
    answering one query with two different models, then a comparison of them (every other
    comparison is an external one, without decision ids). The log (JSON) lists what was
    committed, with the versions ``record_comparison`` returned.
    """
    store = SQLStore(url)
    store.migrate()
    embeddings = unit_vectors(n_writes, seed=1000 + worker)
    rng = np.random.default_rng(worker)
    log: dict[str, list[Any]] = {"decisions": [], "comparisons": []}
    start.wait(60)
    began = time.perf_counter()
    pair: list[DecisionRecord] = []
    for i in range(n_writes):
        triple, step = divmod(i, 3)
        user = users[(worker * 7 + triple) % len(users)]
        query = f"worker {worker} query {triple}"
        if step == 0:
            models = [MODELS[k] for k in rng.choice(len(MODELS), 2, replace=False)]
            pair = []
        if step < 2:
            rec = make_decision(
                user, query=query, chosen=models[step], embedding=embeddings[triple]
            )
            store.record_decision(rec)
            pair.append(rec)
            log["decisions"].append([rec.decision_id, user])
            continue
        first, second = pair if rng.random() < 0.5 else pair[::-1]
        if triple % 2 == 0:
            cmp = make_comparison(user, first, second)
        else:
            cmp = make_comparison(
                user, first.chosen, second.chosen, query=query, embedding=embeddings[triple]
            )
        version = store.record_comparison(cmp)
        log["comparisons"].append([cmp.comparison_id, user, version])
    log["seconds"] = [time.perf_counter() - began]
    store.close()
    Path(out).write_text(json.dumps(log))


def crash_writer(url: str, user: str, conn: Any) -> None:
    """Write decisions and comparisons forever; send each id over ``conn`` once committed."""
    store = SQLStore(url)
    store.migrate()
    embeddings = unit_vectors(64, seed=7)
    conn.send("ready")
    i = 0
    while True:
        query = f"crash query {i}"
        a = make_decision(user, query=query, chosen=MODELS[0], embedding=embeddings[i % 64])
        store.record_decision(a)
        conn.send(("decision", a.decision_id))
        b = make_decision(user, query=query, chosen=MODELS[2], embedding=embeddings[i % 64])
        store.record_decision(b)
        conn.send(("decision", b.decision_id))
        cmp = make_comparison(user, a, b)
        store.record_comparison(cmp)
        conn.send(("comparison", cmp.comparison_id))
        i += 1


def open_and_write(url: str, worker: int, out: str, start: Any) -> None:
    """Open a (possibly brand-new) store at the same moment as others and write one decision."""
    start.wait(60)
    t0 = time.time()
    store = SQLStore(url)
    rec = make_decision(f"opener-{worker}")
    store.record_decision(rec)
    store.close()
    Path(out).write_text(json.dumps({"decision": rec.decision_id, "seconds": time.time() - t0}))


def judgements(n: int, seed: int, rank: dict[str, int]) -> list[tuple[int, str, str]]:
    """``n`` (query index, winner, loser) judgements of a user who ranks models by ``rank``."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a, b = (MODELS[k] for k in rng.choice(len(MODELS), 2, replace=False))
        winner, loser = (a, b) if rank[a] < rank[b] else (b, a)
        out.append((int(rng.integers(len(QUERIES))), winner, loser))
    return out


def record_population(store, embeddings, users, per_user=6):
    """Decisions and comparisons (every other one external) of users who put qwen first."""
    for u, user in enumerate(users):
        for j, (q, winner, loser) in enumerate(judgements(per_user, u, QWEN_FIRST)):
            if j % 2:
                store.record_comparison(
                    make_comparison(user, winner, loser, query=QUERIES[q], embedding=embeddings[q])
                )
                continue
            pair = [
                make_decision(user, query=QUERIES[q], chosen=m, embedding=embeddings[q])
                for m in (winner, loser)
            ]
            for rec in pair:
                store.record_decision(rec)
            store.record_comparison(make_comparison(user, *pair))


# -- faults -----------------------------------------------------------------------------------
def impatient_url(url: str) -> str:
    """The same database, but a writer gives up on a held lock after ~0.3 s (PostgreSQL)."""
    import sqlalchemy as sa

    if url.startswith("sqlite"):
        return url
    parsed = sa.make_url(url)
    options = parsed.query.get("options", "")
    parsed = parsed.update_query_dict({"options": f"{options} -clock_timeout=300".strip()})
    return parsed.render_as_string(hide_password=False)


def impatient_store(url: str) -> SQLStore:
    """A store on ``url`` whose writes fail fast while another connection holds the lock."""
    return SQLStore(impatient_url(url), busy_timeout=0.3)


class WriteLock:
    """Holds the store's write lock from another connection, as a stuck process would.

    SQLite: an open ``BEGIN IMMEDIATE`` transaction; PostgreSQL: ``LOCK TABLE ... IN EXCLUSIVE
    MODE`` on the decisions and comparisons (reads go on, writes wait). Writers of a store from
    :func:`impatient_store` then fail with the database's own lock error.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: Any = None

    def __enter__(self) -> WriteLock:
        import sqlite3

        import sqlalchemy as sa

        if self.url.startswith("sqlite"):
            self._conn = sqlite3.connect(sa.make_url(self.url).database, isolation_level=None)
            self._conn.execute("BEGIN IMMEDIATE")
        else:
            engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
            self._conn = engine.connect()
            self._conn.begin()
            self._conn.exec_driver_sql(
                "LOCK TABLE metarouter_decisions, metarouter_comparisons IN EXCLUSIVE MODE"
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.url.startswith("sqlite"):
            self._conn.execute("ROLLBACK")
        else:
            self._conn.rollback()
        self._conn.close()


def stalled_export(url: str, out: str, started: Any) -> None:
    """Export the dataset, but stall for good after the first rows (to be killed there)."""
    store = SQLStore(url)
    records = store.iter_records

    def stalling(**kwargs: Any) -> Any:
        for i, rec in enumerate(records(**kwargs)):
            yield rec
            if i == 1:
                started.set()
                time.sleep(600)

    store.iter_records = stalling  # type: ignore[method-assign]
    store.export_comparisons(out)
