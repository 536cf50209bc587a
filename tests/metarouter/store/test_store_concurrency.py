"""Many writer processes, and writers killed mid-stream: nothing is lost, duplicated or stale."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import signal
import sqlite3
import time

import numpy as np
import pytest
import sqlalchemy as sa
from _store_helpers import MODELS, concurrent_writer, crash_writer, make_comparison, make_decision
from metarouter.store import ComparisonRecord, DecisionRecord, SQLStore

WORKERS = 8
WRITES = 200
USERS = [f"user-{k}" for k in range(5)]


@pytest.fixture(scope="module")
def router():
    from metarouter.router import MetaRouter

    return MetaRouter.default()  # its embedder is never loaded: no text is embedded here


@pytest.mark.slow
def test_concurrent_writers_lose_nothing_and_preferences_match_recomputation(
    store_url, tmp_path, router
):
    from metarouter.service import RoutingService

    store = SQLStore(store_url)
    service = RoutingService(list(MODELS), router=router, store=store)
    for user in USERS:  # one comparison each, and a preference cached at that version
        store.record_comparison(make_comparison(user, MODELS[0], MODELS[2], query=f"seed {user}"))
    primed = {user: service.preference(user) for user in USERS}
    assert all(p.n_comparisons == 1 for p in primed.values())

    ctx = mp.get_context("spawn")
    start = ctx.Event()
    outs = [tmp_path / f"worker-{w}.json" for w in range(WORKERS)]
    procs = [
        ctx.Process(
            target=concurrent_writer, args=(store_url, w, WRITES, USERS, str(outs[w]), start)
        )
        for w in range(WORKERS)
    ]
    began = time.monotonic()
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(max(1.0, 180 - (time.monotonic() - began)))
    for p in procs:
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0] * WORKERS
    logs = [json.loads(out.read_text()) for out in outs]
    logging.getLogger(__name__).info(
        "%d x %d writes in %.1fs (slowest worker)",
        WORKERS,
        WRITES,
        max(log["seconds"][0] for log in logs),
    )

    logged_decisions = {d: user for log in logs for d, user in log["decisions"]}
    logged_comparisons = {c: (user, v) for log in logs for c, user, v in log["comparisons"]}
    assert sum(len(log["decisions"]) + len(log["comparisons"]) for log in logs) == WORKERS * WRITES

    rows = list(store.iter_records())
    decisions = [r for r in rows if isinstance(r, DecisionRecord)]
    comparisons = [r for r in rows if isinstance(r, ComparisonRecord)]
    assert len(decisions) == len({d.decision_id for d in decisions}) == len(logged_decisions)
    assert {d.decision_id: d.user_id for d in decisions} == logged_decisions
    worker_comparisons = [c for c in comparisons if c.comparison_id in logged_comparisons]
    assert len(worker_comparisons) == len(logged_comparisons)
    assert len(comparisons) == len(logged_comparisons) + len(USERS)
    for c in worker_comparisons:
        assert c.user_id == logged_comparisons[c.comparison_id][0]
        for did in (c.winner_decision_id, c.loser_decision_id):
            assert did is None or logged_decisions[did] == c.user_id

    versions = [v for _, v in logged_comparisons.values()]
    assert len(set(versions)) == len(versions), "two comparisons got the same version"
    for user in USERS:
        mine = [v for u, v in logged_comparisons.values() if u == user]
        assert store.user_version(user) == max(mine)

    arms = list(service.descriptors.values())
    for user in USERS:
        stored = store.comparisons(user)
        fresh = router.adapt([c.to_comparison() for c in stored], arms=arms)
        for svc in (service, RoutingService(list(MODELS), router=router, store=store)):
            got = svc.preference(user)
            assert got.n_comparisons == len(stored) > primed[user].n_comparisons
            np.testing.assert_allclose(
                got.alpha_posterior, fresh.alpha_posterior, rtol=1e-5, atol=1e-6
            )
            assert got.quality_weight == pytest.approx(fresh.quality_weight, rel=1e-5)
    store.close()


def _drain(receiver, reported):
    while receiver.poll(0.5):
        try:
            reported.append(receiver.recv())
        except EOFError:
            break


def test_a_writer_killed_mid_stream_loses_nothing_it_reported(store_url, backend):
    ctx = mp.get_context("spawn")
    for round_ in range(3):
        receiver, sender = ctx.Pipe(duplex=False)
        user = f"crash-{round_}"
        proc = ctx.Process(target=crash_writer, args=(store_url, user, sender))
        proc.start()
        sender.close()
        assert receiver.poll(120) and receiver.recv() == "ready"
        reported: list[tuple[str, str]] = []
        wanted = 40 + 13 * round_  # stop at varying points of the write cycle
        while len(reported) < wanted:
            assert receiver.poll(60), "the writer stopped reporting"
            reported.append(receiver.recv())
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(30)
        assert proc.exitcode == -signal.SIGKILL
        _drain(receiver, reported)  # sent before the kill: committed too
        receiver.close()

        with SQLStore(store_url, busy_timeout=10) as store:
            stored_comparisons = {c.comparison_id for c in store.comparisons(user)}
            for kind, rid in reported:
                if kind == "decision":
                    assert store.get_decision(rid).user_id == user
                else:
                    assert rid in stored_comparisons
            # at most the one write in flight at the kill is beyond what was reported
            n_reported = sum(1 for kind, _ in reported if kind == "comparison")
            assert n_reported <= len(stored_comparisons) <= n_reported + 1
            assert store.user_version(user) > 0
            # the store is readable and writable: the killed writer's lock is gone
            a = make_decision(user, query="after", chosen=MODELS[0])
            b = make_decision(user, query="after", chosen=MODELS[1])
            store.record_decision(a)
            store.record_decision(b)
            store.record_comparison(make_comparison(user, a, b))
            assert len(list(store.iter_records())) > len(reported)
    if backend == "sqlite":
        path = sa.make_url(store_url).database
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
