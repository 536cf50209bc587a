"""The core never imports LangChain or LlamaIndex, and importing metarouter does no heavy work."""

import subprocess
import sys
import textwrap


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )


def test_core_modules_never_import_langchain_or_llama_index():
    proc = _run(
        """
        import importlib, pkgutil, sys
        import metarouter
        for mod in pkgutil.walk_packages(metarouter.__path__, "metarouter."):
            importlib.import_module(mod.name)
        bad = sorted(m for m in sys.modules if m.split(".")[0] in
                     {"langchain", "langchain_core", "llama_index", "langchain_metarouter",
                      "llama_index_metarouter"})
        print(bad)
        assert not bad, bad
        """
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout


def test_importing_metarouter_loads_neither_torch_nor_sentence_transformers():
    proc = _run(
        """
        import sys
        import metarouter
        heavy = [m for m in ("torch", "sentence_transformers", "pandas", "sqlalchemy")
                 if m in sys.modules]
        assert not heavy, heavy
        """
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout


def test_adapters_without_their_extra_raise_one_clear_import_error():
    for adapter, blocked, extra in (
        ("langchain_metarouter", "langchain_core", "metarouter[langchain]"),
        ("llama_index_metarouter", "llama_index", "metarouter[llama-index]"),
    ):
        proc = _run(
            f"""
            import sys
            sys.modules[{blocked!r}] = None  # simulate the extra not being installed
            try:
                import {adapter}
            except ImportError as exc:
                print(exc)
            else:
                raise SystemExit("imported without its extra")
            """
        )
        assert proc.returncode == 0, proc.stderr
        assert f"pip install '{extra}'" in proc.stdout
