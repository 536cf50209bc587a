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


#: Private names the adapters may use, with why. LangChain keeps the handlers registered by
#: context managers (``get_usage_metadata_callback()``, ...) in a module-level registry with no
#: public reader; the router must unset them for the candidate's nested run, or the call's
#: usage is counted twice.
_ALLOWED_PRIVATE = {("langchain_metarouter/_utils.py", "_configure_hooks")}


def test_adapters_use_no_private_attribute_of_another_object():
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    found = []
    for package in ("langchain_metarouter", "llama_index_metarouter"):
        for path in sorted((root / package).glob("*.py")):
            where = f"{package}/{path.name}"
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute):
                    name, owner = node.attr, node.value
                    own = isinstance(owner, ast.Name) and owner.id in ("self", "cls")
                    own = own or (
                        isinstance(owner, ast.Call)
                        and isinstance(owner.func, ast.Name)
                        and owner.func.id == "super"
                    )
                    if own:
                        continue
                elif (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Name)
                    and node.func.id in ("getattr", "setattr", "hasattr")
                    and len(node.args) > 1
                    and isinstance(node.args[1], ast.Constant)
                    and isinstance(node.args[1].value, str)
                ):
                    name = node.args[1].value
                elif isinstance(node, ast.ImportFrom):
                    for alias in node.names:
                        if alias.name.startswith("_") and (where, alias.name) not in (
                            _ALLOWED_PRIVATE
                        ):
                            found.append(f"{where}:{node.lineno} imports {alias.name}")
                    continue
                else:
                    continue
                private = name.startswith("_") and not name.endswith("__")
                if private and (where, name) not in _ALLOWED_PRIVATE:
                    found.append(f"{where}:{node.lineno} {ast.unparse(node)}")
    assert not found, found
