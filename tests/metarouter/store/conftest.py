"""Store fixtures: every test runs on SQLite and on PostgreSQL, each on a fresh database.

PostgreSQL runs when ``METAROUTER_TEST_POSTGRES_URL`` is set (``.ci/run`` starts a server and sets
it); each test then gets its own schema, dropped afterwards. Without the variable the PostgreSQL
cases skip, unless ``METAROUTER_REQUIRE_POSTGRES=1`` (set by ``.ci/run``): then they fail.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # spawned workers import _store_helpers

POSTGRES_ENV = "METAROUTER_TEST_POSTGRES_URL"
REQUIRE_ENV = "METAROUTER_REQUIRE_POSTGRES"


def postgres_base_url() -> str:
    """The test server's URL, or skip (fail when PostgreSQL is required)."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(
                f"{REQUIRE_ENV}=1 but {POSTGRES_ENV} is not set: the PostgreSQL server of "
                ".ci/postgres.sh did not start, so the PostgreSQL store tests cannot run.",
                pytrace=False,
            )
        pytest.skip(
            f"PostgreSQL store tests need {POSTGRES_ENV} (run .ci/run, or: source "
            ".ci/postgres.sh && postgres_start)"
        )
    return url


@pytest.fixture(scope="session")
def _postgres_admin():
    import sqlalchemy as sa

    engine = sa.create_engine(postgres_base_url(), poolclass=sa.pool.NullPool)
    yield engine
    engine.dispose()


def fresh_postgres_url(admin) -> tuple[str, str]:
    """Create a uniquely named schema; returns (URL using it, schema name)."""
    import sqlalchemy as sa

    schema = f"mrtest_{uuid.uuid4().hex[:12]}"
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = sa.make_url(postgres_base_url()).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False), schema


def drop_postgres_schema(admin, schema: str) -> None:
    with admin.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request, tmp_path) -> str:
    """A URL of an empty database: a SQLite file in tmp_path, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    admin = request.getfixturevalue("_postgres_admin")
    url, schema = fresh_postgres_url(admin)
    yield url
    drop_postgres_schema(admin, schema)


@pytest.fixture
def backend(store_url) -> str:
    return "sqlite" if store_url.startswith("sqlite") else "postgresql"


@pytest.fixture
def store(store_url):
    from metarouter.store import SQLStore

    with SQLStore(store_url) as opened:
        yield opened


@pytest.fixture
def another_store_url(store_url, tmp_path, request):
    """Makes URLs of more empty databases on the same backend as ``store_url``."""
    schemas: list[str] = []

    def make() -> str:
        if store_url.startswith("sqlite"):
            return f"sqlite:///{tmp_path / f'another-{len(schemas)}-{uuid.uuid4().hex[:6]}.db'}"
        admin = request.getfixturevalue("_postgres_admin")
        url, schema = fresh_postgres_url(admin)
        schemas.append(schema)
        return url

    yield make
    if schemas:
        admin = request.getfixturevalue("_postgres_admin")
        for schema in schemas:
            drop_postgres_schema(admin, schema)


@pytest.fixture
def postgres_store_url(request) -> str:
    """A fresh PostgreSQL schema's URL, for tests of what only PostgreSQL does."""
    admin = request.getfixturevalue("_postgres_admin")
    url, schema = fresh_postgres_url(admin)
    yield url
    drop_postgres_schema(admin, schema)


@pytest.fixture(scope="session")
def router(default_router):
    """The bundled router (with the session's embedder), for tests that route."""
    return default_router
