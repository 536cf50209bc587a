"""Child process of the benchmark: import the LangChain adapter, route one call, report JSON.

Run as ``python benchmarks/_one_call.py STORE_PATH [ROUTER] [EMBEDDER]``: ``import`` as ROUTER
stops after the import; a router folder routes with that router instead of the bundled one
(``-``: the bundled one for EMBEDDER); EMBEDDER routes with that embedding backend instead of
the router's own (e.g. ``minilm-onnx`` with the bundled ``minilm-torch`` router). The candidates are
LangChain's scripted ``FakeListChatModel``s, so no network is used. Peak RSS is the process's
own high-water mark, ``VmHWM`` of ``/proc/self/status`` (``ru_maxrss`` would not do: Linux
carries it over from the parent benchmark process across fork and exec).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def main() -> None:
    store_path = sys.argv[1]
    out: dict[str, object] = {}
    start = time.perf_counter()
    import langchain_metarouter

    out["import_s"] = time.perf_counter() - start
    out["torch_after_import"] = "torch" in sys.modules
    out["rss_after_import_mb"] = _peak_rss_mb()
    if len(sys.argv) > 2 and sys.argv[2] == "import":
        print(json.dumps(out))
        return

    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from metarouter.store.sql import SQLStore

    start = time.perf_counter()
    router = None
    if len(sys.argv) > 2:
        from metarouter.embeddings import Embedder
        from metarouter.router import MetaRouter, default_router_dir

        backend = sys.argv[3] if len(sys.argv) > 3 else None
        folder = default_router_dir(backend) if sys.argv[2] == "-" else Path(sys.argv[2])
        embedder = Embedder(backend) if backend is not None else None
        router = MetaRouter.from_pretrained(folder, embedder=embedder)
    chat = langchain_metarouter.MetaRouterChat(
        router=router,
        candidates={
            "gemma-2-9b-it": FakeListChatModel(responses=["4"]),
            "llama-3.1-nemotron-51b-instruct": FakeListChatModel(responses=["Four."]),
        },
        store=SQLStore(store_path),
        user_id="bench-user",
    )
    out["construct_s"] = time.perf_counter() - start
    out["rss_after_construct_mb"] = _peak_rss_mb()
    start = time.perf_counter()
    answer = chat.invoke("What is 2 + 2?")
    out["first_call_s"] = time.perf_counter() - start
    out["torch_after_first_call"] = "torch" in sys.modules
    out["sentence_transformers_after_first_call"] = "sentence_transformers" in sys.modules
    start = time.perf_counter()
    chat.invoke("What is 3 + 3?")
    out["second_call_s"] = time.perf_counter() - start
    out["chosen"] = answer.response_metadata["metarouter"]["chosen_model"]
    out["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
