"""``metarouter`` exports its public API, and resolves it lazily.

Modelled on httpx's ``tests/test_exported_members.py`` (every public name of the package is in
``__all__`` and the other way round), adapted to lazy exports: names are resolved by
``getattr``, and a fresh interpreter shows that importing the package loads nothing heavy.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
import types

import metarouter

#: The core API the docs use by its package-level name.
CORE_API = {
    "MetaRouter": "metarouter.router",
    "RoutingService": "metarouter.service",
    "ArmSpec": "metarouter.service",
    "Decision": "metarouter.service",
    "Response": "metarouter.service",
    "Comparison": "metarouter.types",
    "Preference": "metarouter.types",
    "RoutingDecision": "metarouter.types",
    "SQLStore": "metarouter.store.sql",
    "PreferenceStore": "metarouter.store.base",
    "Price": "metarouter.pricing",
    "CallFlow": "metarouter.dispatch",
    "FallbackPolicy": "metarouter.dispatch",
    "routing_text": "metarouter.text",
    "Pair": "metarouter.feedback",
    "MetaRouterError": "metarouter.errors",
}


def test_all_exported_members_resolve_to_metarouter_objects():
    for name in metarouter.__all__:
        value = getattr(metarouter, name)
        if name == "__version__":
            assert isinstance(value, str)
            continue
        assert value.__module__.startswith("metarouter."), name
        assert value.__name__ == name


def test_every_public_member_is_exported_and_nothing_else():
    for name in metarouter.__all__:  # resolve the lazy ones
        getattr(metarouter, name)
    public = {
        name
        for name, value in vars(metarouter).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public | {"__version__"} == set(metarouter.__all__)
    assert dir(metarouter) == sorted(metarouter.__all__)
    assert len(set(metarouter.__all__)) == len(metarouter.__all__)


def test_the_core_api_is_the_defining_modules_object():
    for name, module in CORE_API.items():
        assert name in metarouter.__all__, name
        assert getattr(metarouter, name) is getattr(importlib.import_module(module), name)


def test_an_unknown_name_is_an_attribute_error():
    try:
        metarouter.NoSuchThing  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("an unknown name resolved")


def test_importing_the_package_loads_nothing_heavy_until_a_heavy_name_is_used():
    code = """
        import sys
        heavy = ("torch", "sentence_transformers", "sqlalchemy", "pandas")
        import metarouter
        from metarouter import CallRequest, Comparison, FallbackPolicy, Pair, Price, routing_text
        assert not [m for m in heavy if m in sys.modules], [m for m in heavy if m in sys.modules]
        from metarouter import MetaRouter, RoutingService, SQLStore
        assert MetaRouter.__name__ == "MetaRouter" and "sqlalchemy" in sys.modules
    """
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
