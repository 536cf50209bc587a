"""``MetaRouter``: adapt to a user from pairwise comparisons, then route queries for them.

Typical use::

    router = MetaRouter.default()                  # bundled, trained on LLMRouter data
    pref = router.adapt(comparisons)               # encoder forward pass, no gradient step
    decision = router.route("Prove that ...", ["gemma-2-9b-it", "llama-3.1-nemotron-51b-instruct"],
                            pref)
    decision.model, decision.scores

Candidates are model names from the router's catalog, or :class:`~metarouter.arms.ArmDescriptor`
objects for models it has never seen (see :meth:`MetaRouter.describe`).

Importing this module does not import torch: the network's modules load with the first
router (so ``import langchain_metarouter`` stays cheap). Per call, routing reuses the
candidates' tensors and the user's preference tensors (small LRUs keyed by the identity of the
descriptors and of the :class:`~metarouter.types.Preference`; both are frozen, treat their
arrays as read-only) and runs under ``torch.inference_mode``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from metarouter._version import __version__
from metarouter.arms import ArmDescriptor, CostModel, Prototypes
from metarouter.calibration import base_logit
from metarouter.config import FORMAT_VERSION, MetaRouterConfig
from metarouter.embedding_backends import (
    EMBEDDERS,
    ROUTER_EMBEDDER,
    TORCH_FREE_EMBEDDERS,
    same_vectors,
)
from metarouter.embeddings import Embedder
from metarouter.errors import ConfigError, EmbedderMismatchError, ModelLoadError, UnknownArmError
from metarouter.inference import ArmPart, QualityHead, check_state_shapes, head_shapes
from metarouter.posterior import (
    REGIME_FLOOR,
    ComparisonData,
    PosteriorConfig,
    UserPosterior,
    comparison_value,
    infer_posterior,
)
from metarouter.pricing import Price, estimate_tokens
from metarouter.types import BilledCall, Comparison, Preference, RoutingDecision

if TYPE_CHECKING:
    from metarouter.model import MetaRouterModel

__all__ = [
    "BUNDLED_ROUTERS",
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "Candidate",
    "MetaRouter",
    "default_router_dir",
]

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
_FORMAT_NAME = "metarouter-router"

Candidate = str | ArmDescriptor

#: Candidate sets and (preference, candidate set) pairs whose tensors are kept per router.
_TENSOR_CACHE_SIZE = 64


@dataclass(frozen=True)
class _ArmTensors:
    """Arrays of one candidate set, built once (the descriptors are kept alive with them)."""

    arms: tuple[ArmDescriptor, ...]
    cost_terms: np.ndarray  # (K, 2)
    base: np.ndarray  # (K,) query-blind base logits
    part: ArmPart  # the quality head's query-independent part


def _base_logits(arms: Sequence[ArmDescriptor]) -> np.ndarray:
    """Query-blind base logit of each arm: its capability profile's mean quality."""
    return base_logit(np.asarray([float(np.mean(a.capability)) for a in arms]))


def _no_comparisons() -> ComparisonData:
    empty = np.zeros(0)
    idx = np.zeros(0, np.int64)
    return ComparisonData((), empty, idx, idx, empty, empty, empty, empty)


def _log_ratio(observed: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """log(observed / expected) cost, clamped to [-3, 3]; 0 when either is unknown (zero)."""
    ok = (observed > 0) & (expected > 0)
    ratio = np.log(np.maximum(observed, 1e-12) / np.maximum(expected, 1e-12))
    return np.where(ok, np.clip(ratio, -3.0, 3.0), 0.0)


def _billed_observations(
    billed: Sequence[BilledCall], descs: Sequence[ArmDescriptor]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slots, billed USD and expected USD (uncalibrated cost model) of billed calls.

    ``descs`` must hold a descriptor for every billed model (in slot order).
    """
    slot = {a.name: i for i, a in enumerate(descs)}
    ids = np.asarray([slot[b.model] for b in billed], np.int64)
    expected = [float(descs[slot[b.model]].cost.estimate(b.prompt_tokens)) for b in billed]
    return ids, np.asarray([b.cost_usd for b in billed], np.float64), np.asarray(expected, float)


def _cost_factors(
    comparisons: Sequence[Comparison],
    win: np.ndarray,
    lose: np.ndarray,
    expected: np.ndarray,
    known: np.ndarray,
    billed: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, float]:
    """Per arm, the calibration of its cost model on this user's traffic.

    The log ratio of observed to expected cost: traffic-wide (shrunk to 0 with one
    pseudo-observation), and per arm its own ratios shrunk towards that traffic-wide value with
    one pseudo-observation. This is :func:`metarouter.encoder.cost_log_factors`, the estimate
    the meta-training episodes use, for one user in numpy (equal to float64 rounding; tested).
    Arms whose cost model is unknown get the traffic-wide value. With ``billed`` calls the
    traffic-wide value is the mean of each observed arm's mean log ratio instead (each arm one
    vote, one pseudo-arm at 0): routed calls are concentrated on the arms the router picks.

    Args:
        comparisons: The comparisons.
        win: (N,) slot of each comparison's preferred arm.
        lose: (N,) slot of the other arm.
        expected: (N, A) the compared arms' expected costs at each compared query.
        known: (S,) whether each slot's cost model is known (S >= A: slots past the compared
            arms are arms seen only in ``billed``).
        billed: Optional ``(slots, billed USD, expected USD)`` of the user's billed routed
            calls: more observations of the same ratios.

    Returns:
        ``(factors (S,), traffic-wide factor)``.
    """
    n = len(comparisons)
    rows = np.arange(n)
    ok = known[win] & known[lose]
    sources = [
        (
            win,
            np.asarray([c.winner_cost_usd for c in comparisons], np.float64),
            expected[rows, win],
            ok,
        ),
        (
            lose,
            np.asarray([c.loser_cost_usd for c in comparisons], np.float64),
            expected[rows, lose],
            ok,
        ),
    ]
    if billed is not None:
        ids = np.asarray(billed[0], np.int64)
        sources.append(
            (ids, np.asarray(billed[1], np.float64), np.asarray(billed[2], np.float64), known[ids])
        )
    ids = np.concatenate([src[0] for src in sources])
    ratio = np.concatenate([_log_ratio(src[1], src[2]) for src in sources])
    used = np.concatenate(
        [(src[3] & (src[1] > 0) & (src[2] > 0)).astype(np.float64) for src in sources]
    )
    slots = np.arange(len(known) + 1)[:, None]  # last id: never observed
    hit = (ids[None, :] == slots) * used[None, :]
    if billed is not None and len(billed[0]):
        # routed calls pile up on the arms the router picks: give each arm one vote, so one
        # arm's verbosity does not set every other arm's factor
        seen = hit.sum(-1) > 0
        means = (hit * ratio[None, :]).sum(-1) / np.maximum(hit.sum(-1), 1.0)
        traffic = means[seen].sum() / (seen.sum() + 1.0)
    else:
        traffic = (ratio * used).sum() / (used.sum() + 1.0)
    factors = np.exp(((hit * ratio[None, :]).sum(-1) + traffic) / (hit.sum(-1) + 1.0))
    return np.where(known, factors[:-1], factors[-1]), float(factors[-1])


#: Temperature (utility units) of the softmax that turns expected utilities into scores.
DECISION_TEMPERATURE = 0.01


def _decision_scores(util: np.ndarray, cost: np.ndarray, cost_penalty: float) -> np.ndarray:
    """Softmax of the utilities less ``cost_penalty`` times the normalised costs (rows sum to 1)."""
    if cost_penalty and not (np.isfinite(cost_penalty) and cost_penalty >= 0):
        raise ConfigError(f"cost_penalty must be a finite number >= 0, got {cost_penalty!r}.")
    if cost_penalty:
        util = util - cost_penalty * cost
    z = util / DECISION_TEMPERATURE
    probs = np.exp(z - z.max(axis=1, keepdims=True))
    return probs / probs.sum(axis=1, keepdims=True)


def _write_new_files(folder: Path, files: Mapping[str, bytes]) -> None:
    """Write each file to a fresh temporary file in ``folder``, then rename them all into place.

    ``mkstemp`` creates each temporary file exclusively (``O_EXCL``) under an unpredictable
    name, so a symlink or file planted in ``folder`` is never followed or written through;
    ``os.replace`` then swaps the final names atomically (replacing a planted link itself, not
    its target).
    """
    temps: dict[str, str] = {}
    try:
        for name, data in files.items():
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
            temps[name] = tmp
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        for name, tmp in temps.items():
            os.replace(tmp, folder / name)
    finally:
        for tmp in temps.values():
            Path(tmp).unlink(missing_ok=True)


def _file_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    """The tensors' shapes in a safetensors file, read from its header (nothing allocated)."""
    from safetensors import safe_open

    def shapes(path: str) -> dict[str, tuple[int, ...]]:
        with safe_open(path, "np") as fh:
            return {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}  # noqa: SIM118 - not a dict

    return _read_safetensors(weights, shapes)


def _check_weight_shapes(
    config: MetaRouterConfig, found: Mapping[str, tuple[int, ...]], weights: Path
) -> None:
    """Refuse weights whose tensors lack the shapes ``config`` implies, before allocating.

    A tampered ``config.json`` (``hidden_dim=20000``) would otherwise allocate gigabytes
    before the mismatch shows.

    Raises:
        ModelLoadError: Names the first tensor that differs.
    """
    import torch

    from metarouter.model import MetaRouterModel

    try:
        with torch.device("meta"):  # shapes only: nothing is allocated
            network = MetaRouterModel(config)
    except (RuntimeError, ValueError, OverflowError) as exc:
        raise ModelLoadError(
            f"{weights.parent / CONFIG_FILE} describes a network that cannot be built ({exc}); "
            "nothing was loaded. Fix: keep the two files of one save together (re-download or "
            "re-save the router)."
        ) from exc
    expected = {k: tuple(v.shape) for k, v in network.state_dict().items()}
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    wrong = [k for k in expected if k in found and expected[k] != tuple(found[k])]
    if missing or extra or wrong:
        detail = (
            f"tensor {wrong[0]!r} has shape {list(found[wrong[0]])} but {CONFIG_FILE} implies "
            f"{list(expected[wrong[0]])}"
            if wrong
            else f"missing tensors {missing[:3]}, unexpected tensors {extra[:3]}"
        )
        raise ModelLoadError(
            f"{weights}: the weights do not match {CONFIG_FILE} ({detail}); nothing was loaded. "
            "Fix: keep the two files of one save together (re-download or re-save the router)."
        )


def _build_network(
    config: MetaRouterConfig, state: Mapping[str, Any], weights: Path
) -> MetaRouterModel:
    """The torch network with ``state`` (torch tensors or numpy arrays) loaded, strictly."""
    import torch

    from metarouter.model import MetaRouterModel

    model = MetaRouterModel(config)  # the shapes were checked: no surprise allocation
    tensors = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in state.items()}
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(
            f"{weights}: weights do not match {CONFIG_FILE} ({str(exc).splitlines()[0]}). "
            "Fix: keep the two files of one save together."
        ) from exc
    return model


def _load_tensors(weights: Path) -> dict[str, Any]:
    """The saved tensors as torch tensors."""
    from safetensors.torch import load_file

    return _read_safetensors(weights, load_file)


def _load_arrays(weights: Path) -> dict[str, np.ndarray]:
    """The saved tensors as numpy arrays (no torch import)."""
    from safetensors.numpy import load_file

    return _read_safetensors(weights, load_file)


def _read_safetensors(weights: Path, read: Any) -> dict[str, Any]:
    """``read(path)`` of a safetensors file, a damaged file raised as :class:`ModelLoadError`."""
    from safetensors import SafetensorError

    try:
        return dict(read(str(weights)))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelLoadError(
            f"{weights}: corrupted weights ({exc}). Fix: re-save or retrain the router."
        ) from exc


def check_embedder(config: MetaRouterConfig, embedder: object) -> None:
    """Raise if ``embedder`` is not the backend ``config`` was trained for.

    Objects without a backend ``name`` (e.g. a table of precomputed vectors in a benchmark)
    are trusted. A backend that reproduces the trained-for backend's vectors is accepted
    (:func:`~metarouter.embedding_backends.same_vectors`: ``minilm-onnx`` for a router trained
    for ``minilm-torch``). A different weights fingerprint with the same backend only logs a
    warning (e.g. a newer release of the weights package); for such a stand-in the source
    weights (the fingerprint before ``;``) are compared.

    Raises:
        EmbedderMismatchError: Another backend or vector size.
    """
    name = getattr(embedder, "name", None)
    if name is None:
        return
    dim = getattr(embedder, "dim", None)
    if not same_vectors(config.embedder, name) or (dim is not None and dim != config.embedding_dim):
        same = [n for n in EMBEDDERS if n != config.embedder and same_vectors(config.embedder, n)]
        also = "".join(f" or Embedder({n!r}) (the same vectors)" for n in same)
        raise EmbedderMismatchError(
            f"this router was trained for the {config.embedder!r} embedder "
            f"({config.embedding_dim}-d vectors) but is given the {name!r} embedder ({dim}-d). "
            f"Fix: build it with Embedder({config.embedder!r}){also} (or pass no embedder, and "
            "the router makes the right one), or retrain the router for this embedder: "
            f"`metarouter train --embedder {name} ...`."
        )
    if config.embedder_fingerprint:
        spec = getattr(embedder, "spec", None)
        found = getattr(spec, "fingerprint", None)
        trained = config.embedder_fingerprint
        if found and name != config.embedder:  # a stand-in: compare the source weights
            found, trained = found.split(";")[0], trained.split(";")[0]
        if found and found != trained:
            logger.warning(
                "the %s embedder's weights (%s) differ from the ones this router was trained "
                "with (%s); routing quality may differ. Retrain to silence this.",
                name,
                found,
                config.embedder_fingerprint,
            )


#: Bundled routers (folders under ``metarouter/weights``) by the embedder they were trained for.
BUNDLED_ROUTERS = {"static": "default", "minilm-torch": "default-minilm"}


def default_router_dir(embedder: str | None = None) -> Path:
    """Folder of a router bundled with the package (trained on the bundled LLMRouter data).

    Args:
        embedder: The backend the router must be trained for (default: the default embedder,
            ``static``); ``minilm-torch`` has a bundled router of its own, which
            ``minilm-onnx`` (the same vectors) uses too.
    """
    name = embedder or ROUTER_EMBEDDER
    # a backend giving a bundled router's vectors uses that router (minilm-onnx: the MiniLM one)
    name = next((k for k in BUNDLED_ROUTERS if same_vectors(k, name)), name)
    if name not in BUNDLED_ROUTERS:
        raise ConfigError(
            f"no router is bundled for the {name!r} embedder (bundled: "
            f"{sorted(BUNDLED_ROUTERS)}). Fix: train one with `metarouter train --embedder "
            f"{name} --out DIR` and load it with MetaRouter.from_pretrained(DIR)."
        )
    return Path(str(resources.files("metarouter") / "weights" / BUNDLED_ROUTERS[name]))


class MetaRouter:
    """A meta-trained contextual-bandit router (context encoder + per-arm policy).

    Args:
        model: The trained network.
        catalog: Descriptors of the arms known at training time.
        embedder: Query embedder (default: a new :class:`Embedder` of the backend the router
            was trained for, ``config.embedder``). Another backend is an
            :class:`~metarouter.errors.EmbedderMismatchError`.

    References:
        Zeng, Tang, Ding (2026), "Learning to Route LLMs from Implicit Cost-Performance
        Preferences via Meta-Learning", arXiv 2606.06178. See docs/model.md.
    """

    def __init__(
        self,
        model: MetaRouterModel,
        catalog: Sequence[ArmDescriptor],
        embedder: Embedder | None = None,
    ) -> None:
        self._model: MetaRouterModel | None = model.eval()
        # saved tensors of a router loaded without torch (the network is built on first use)
        self._state: dict[str, np.ndarray] | None = None
        self._weights_path: Path | None = None
        self._setup(model.config, catalog, embedder)

    @classmethod
    def _without_network(
        cls,
        config: MetaRouterConfig,
        state: dict[str, np.ndarray],
        catalog: Sequence[ArmDescriptor],
        embedder: Embedder | None,
        weights: Path,
    ) -> MetaRouter:
        """A router routing from its saved tensors; torch loads only if :attr:`model` is used."""
        router = cls.__new__(cls)
        router._model = None
        router._state = state
        router._weights_path = weights
        router._setup(config, catalog, embedder)
        return router

    def _setup(
        self,
        config: MetaRouterConfig,
        catalog: Sequence[ArmDescriptor],
        embedder: Embedder | None,
    ) -> None:
        self.config: MetaRouterConfig = config
        self.catalog: dict[str, ArmDescriptor] = {a.name: a for a in catalog}
        if embedder is not None:
            check_embedder(self.config, embedder)
        self._embedder = embedder
        self._cache_lock = threading.Lock()
        self._head: QualityHead | None = None
        self._arm_tensors: OrderedDict[tuple[int, ...], _ArmTensors] = OrderedDict()
        self._priors: dict[float, Preference] = {}
        self._posterior_config: PosteriorConfig | None = None
        self._reference: np.ndarray | None = None
        self._neutral_profile = (
            np.mean([a.capability for a in catalog], axis=0).astype(np.float32)
            if catalog
            else np.full(self.config.n_prototypes, 0.5, np.float32)
        )

    # -- construction ---------------------------------------------------------------------------
    @property
    def model(self) -> MetaRouterModel:
        """The torch network (training, fine-tuning, saving).

        A router for a torch-free embedder (``TORCH_FREE_EMBEDDERS`` of
        :mod:`metarouter.embedding_backends`), or loaded by :meth:`from_pretrained` with one
        (e.g. a ``minilm-torch`` router with ``Embedder("minilm-onnx")``), routes and adapts
        without it: the network, and torch, load on first access of this attribute.
        """
        if self._model is None:
            with self._cache_lock:
                if self._model is None:
                    assert self._state is not None and self._weights_path is not None
                    shapes = {k: tuple(v.shape) for k, v in self._state.items()}
                    _check_weight_shapes(self.config, shapes, self._weights_path)
                    network = _build_network(self.config, self._state, self._weights_path)
                    self._model = network.eval()  # the source of the weights from now on
        return self._model

    def _saved_state(self) -> dict[str, np.ndarray] | None:
        """The saved tensors while the network is not built (None once it is, or never was)."""
        return self._state if self._model is None else None

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The network's tensors as numpy arrays, by ``state_dict`` name (read-only use)."""
        state = self._saved_state()
        if state is not None:
            return dict(state)
        return {k: v.detach().cpu().numpy() for k, v in self.model.state_dict().items()}

    def _tensor(self, name: str) -> np.ndarray:
        """One of the network's tensors as a numpy array (without building the network)."""
        state = self._saved_state()
        if state is not None:
            return state[name]
        value: Any = self.model.get_buffer(name)
        return np.asarray(value.detach().cpu().numpy())

    def _quality_head(self) -> QualityHead:
        """The numpy quality head (built on first use)."""
        if self._head is None:
            with self._cache_lock:
                if self._head is None:
                    state = self._saved_state()
                    self._head = (
                        QualityHead(self.model)
                        if state is None
                        else QualityHead.from_state(self.config, state)
                    )
        return self._head

    @property
    def embedder(self) -> Embedder:
        """The query embedder (created on first use)."""
        if self._embedder is None:
            self._embedder = Embedder(self.config.embedder)
        return self._embedder

    @embedder.setter
    def embedder(self, embedder: Embedder) -> None:
        check_embedder(self.config, embedder)
        self._embedder = embedder

    def warm_up(self) -> None:
        """Load the embedder's weights and run one query through embedding and policy now.

        Call it at start-up so the first routed call does not pay for loading (see
        docs/benchmarks.md for the first-call times it removes).
        """
        self.embedder.warm_up()
        emb = self.embedder.encode_one("warm up")
        arms = list(self.catalog.values())[:2]
        if arms:
            self.route_embeddings(emb[None, :], np.ones(1), arms, self.prior())

    @classmethod
    def default(cls, embedder: Embedder | None = None) -> MetaRouter:
        """The router bundled with the package (no training step needed).

        Args:
            embedder: An embedder to share; the bundled router trained for its backend is
                loaded (``static``: the default one; ``minilm-torch``: the MiniLM one).
        """
        return cls.from_pretrained(
            default_router_dir(getattr(embedder, "name", None)), embedder=embedder
        )

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (no pickle) to ``directory``.

        Files are written to new temporary files (unique names, created exclusively in
        ``directory``, so nothing planted there is followed or overwritten) and renamed into
        place, so a crash never leaves a half-written router behind.
        """
        import torch
        from safetensors.torch import save

        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": _FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "metarouter_version": __version__,
            "config": self.config.to_dict(),
            "catalog": [{"name": a.name, "source": a.source} for a in self.catalog.values()],
        }
        cap, cost = self._catalog_arrays()
        if cap.shape != tuple(self.model.catalog_capability.shape):
            raise ConfigError(
                f"catalog of {len(self.catalog)} arms does not match the model's "
                f"{len(self.config.catalog)}; describe new arms per call instead of adding them "
                "to the catalog."
            )
        state = {
            k: v.detach().clone().contiguous().cpu() for k, v in self.model.state_dict().items()
        }
        state["catalog_capability"] = torch.as_tensor(cap)
        state["catalog_cost"] = torch.as_tensor(cost, dtype=torch.float64)
        weights = save(
            state, metadata={"format": _FORMAT_NAME, "format_version": str(FORMAT_VERSION)}
        )
        config = (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode("utf-8")
        _write_new_files(path, {WEIGHTS_FILE: weights, CONFIG_FILE: config})
        return path

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike[str], embedder: Embedder | None = None
    ) -> MetaRouter:
        """Load a router saved with :meth:`save_pretrained`.

        Args:
            directory: The saved router's folder.
            embedder: Its embedder (default: one of the backend its config names). A
                torch-free one (``static``, ``minilm-onnx``...) loads the router without torch.

        Raises:
            ModelLoadError: The folder or a file is missing, unreadable, from an incompatible
                format version, or the weights do not match the config.
        """
        path = Path(directory)
        cfg_path, w_path = path / CONFIG_FILE, path / WEIGHTS_FILE
        if not path.is_dir() or not cfg_path.is_file() or not w_path.is_file():
            raise ModelLoadError(
                f"{path}: not a saved router (need {CONFIG_FILE} and {WEIGHTS_FILE}). Fix: pass "
                "the folder written by save_pretrained() or `metarouter train --out`."
            )
        try:
            meta = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelLoadError(
                f"{cfg_path}: unreadable ({exc}). Fix: re-save or retrain."
            ) from exc
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT_NAME:
            raise ModelLoadError(f"{cfg_path}: not a metarouter router config.")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ModelLoadError(
                f"{cfg_path}: format version {meta.get('format_version')!r} (written by "
                f"metarouter {meta.get('metarouter_version')}), this is metarouter {__version__} "
                f"reading version {FORMAT_VERSION}. Fix: retrain with `metarouter train`, or "
                "install the metarouter version that wrote it."
            )
        try:
            config = MetaRouterConfig.from_dict(meta["config"])
            catalog_meta = meta["catalog"]
        except (KeyError, TypeError, ConfigError) as exc:
            raise ModelLoadError(f"{cfg_path}: invalid config ({exc}).") from exc
        if config.embedder in TORCH_FREE_EMBEDDERS or getattr(embedder, "name", None) in (
            TORCH_FREE_EMBEDDERS
        ):
            state = _load_arrays(w_path)
            expected = {
                **head_shapes(config),
                "reference": (config.reference_size, config.embedding_dim),
                "catalog_capability": (len(config.catalog), config.n_prototypes),
                "catalog_cost": (len(config.catalog), 2),
            }
            check_state_shapes(expected, state, f"{w_path}: the weights")
            model = None
            cap = np.array(state["catalog_capability"], dtype=np.float32)
            cost = np.array(state["catalog_cost"], dtype=np.float64)
        else:
            _check_weight_shapes(config, _file_shapes(w_path), w_path)
            model = _build_network(config, _load_tensors(w_path), w_path)
            cap, cost = model.catalog_arrays()
        if len(catalog_meta) != len(config.catalog) or cap.shape[0] != len(config.catalog):
            raise ModelLoadError(f"{path}: catalog does not match the weights.")
        catalog = [
            ArmDescriptor(
                entry["name"],
                CostModel(float(cost[i, 0]), float(cost[i, 1])),
                cap[i],
                entry.get("source", "outcomes"),
            )
            for i, entry in enumerate(catalog_meta)
        ]
        if model is None:
            return cls._without_network(config, state, catalog, embedder, w_path)
        return cls(model, catalog, embedder=embedder)

    def _catalog_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        arms = [self.catalog[n] for n in self.config.catalog if n in self.catalog]
        cap = (
            np.stack([a.capability for a in arms]).astype(np.float32)
            if arms
            else np.zeros((0, self.config.n_prototypes), np.float32)
        )
        cost = np.asarray(
            [[a.cost.per_call_usd, a.cost.per_input_token_usd] for a in arms], dtype=np.float64
        ).reshape(-1, 2)
        return cap, cost

    # -- arms -----------------------------------------------------------------------------------
    def describe(
        self,
        name: str,
        price: Price,
        *,
        like: str | None = None,
        quality: float | None = None,
        outcomes: tuple[Sequence[str], Sequence[float]] | None = None,
    ) -> ArmDescriptor:
        """Describe a model the router has not seen, so it can be routed without retraining.

        Give exactly one capability source:

        Args:
            name: Model name.
            price: Its USD-per-1M-token prices.
            like: A catalog model with a similar capability profile.
            quality: A flat expected quality in [0, 1].
            outcomes: ``(probe_queries, qualities)``: its graded answers on probe queries; the
                profile is measured on them (the most faithful option).
        """
        given = sum(x is not None for x in (like, quality, outcomes))
        if given != 1:
            raise ConfigError(
                f"describe({name!r}): give exactly one of like=, quality= or outcomes=."
            )
        if like is not None:
            return ArmDescriptor.from_price(name, price, like=self._lookup(like))
        if quality is not None:
            return ArmDescriptor.from_price(
                name, price, quality=quality, n_prototypes=self.config.n_prototypes
            )
        assert outcomes is not None
        queries, qualities = outcomes
        emb = self.embedder.encode(list(queries))
        return ArmDescriptor.from_outcomes(
            name,
            Prototypes(self._tensor("prototypes").copy(), self.config.prototype_temperature),
            emb,
            np.asarray(qualities, float),
            price=price,
        )

    def _lookup(self, name: str) -> ArmDescriptor:
        try:
            return self.catalog[name]
        except KeyError:
            raise UnknownArmError(
                f"unknown model {name!r}: not in this router's catalog {sorted(self.catalog)}. "
                "Fix: pass an ArmDescriptor from router.describe(name, price, like=... | "
                "quality=... | outcomes=...)."
            ) from None

    def resolve(self, candidates: Iterable[Candidate]) -> list[ArmDescriptor]:
        """Descriptors for candidates given as catalog names or descriptors."""
        arms = [c if isinstance(c, ArmDescriptor) else self._lookup(c) for c in candidates]
        names = [a.name for a in arms]
        if len(arms) < 1:
            raise ConfigError("route() needs at least one candidate model.")
        if len(set(names)) != len(names):
            raise ConfigError(f"candidate names must be unique, got {names}.")
        p = self.config.n_prototypes
        for a in arms:
            if a.capability.shape != (p,):
                raise ConfigError(
                    f"arm {a.name!r} has a {a.capability.shape[0]}-region profile; this router "
                    f"uses {p}. Fix: describe it with this router's describe()."
                )
        return arms

    # -- adaptation -----------------------------------------------------------------------------
    @property
    def posterior_config(self) -> PosteriorConfig:
        """The user posterior's settings (meta-learned priors, saved with the router)."""
        if self._posterior_config is None:
            self._posterior_config = self.config.posterior_config()
        return self._posterior_config

    def novelty(self, embeddings: np.ndarray, *, traffic: np.ndarray | None = None) -> float:
        """How unlike the training queries these queries are, in [0, 1] (see :mod:`.novelty`).

        Args:
            embeddings: The queries whose evidence is counted (e.g. the compared ones).
            traffic: Embeddings of more of the user's queries to read that evidence from
                (:meth:`metarouter.novelty.NoveltyModel.traffic_novelty`).
        """
        reference = self._reference_embeddings()
        if len(reference) == 0:
            return 0.0
        return self.config.novelty_model().traffic_novelty(embeddings, reference, traffic=traffic)

    def _reference_embeddings(self) -> np.ndarray:
        """The saved sample of training-query embeddings (novelty's reference), read once."""
        if self._reference is None:
            self._reference = self._tensor("reference").astype(np.float32)
        return self._reference

    def prior(self, novelty: float = 0.0) -> Preference:
        """The preference of a user with no comparisons yet.

        Args:
            novelty: Prior probability that the user's traffic is unlike the training queries
                (routing a new user's queries uses their own novelty).
        """
        key = round(float(np.clip(novelty, 0.0, 1.0)), 2)
        with self._cache_lock:
            hit = self._priors.get(key)
        if hit is None:
            hit = self._preference(
                infer_posterior(_no_comparisons(), self.posterior_config, novelty=key),
                0,
                {},
                1.0,
                key,
            )
            with self._cache_lock:
                self._priors[key] = hit
        return hit

    def adapt(
        self,
        comparisons: Sequence[Comparison],
        *,
        arms: Iterable[Candidate] = (),
        traffic: np.ndarray | None = None,
        billed: Sequence[BilledCall] = (),
    ) -> Preference:
        """Infer a user's preference from their comparisons (the user posterior).

        Args:
            comparisons: The user's pairwise feedback (any number, including none).
            arms: Descriptors of compared models that are not in the catalog; models known
                neither way are treated as an average catalog model.
            traffic: Optional (M, D) embeddings of the user's recent queries. The prior odds
                that their traffic is unlike the training data are then read from these and
                the compared queries together, with the weight of the compared ones (see
                :meth:`novelty`), instead of from the few compared queries alone. The
                service passes the user's last routed queries.
            billed: Optional billed routed calls of the user: with the comparisons' two
                billed answers they calibrate the arms' expected costs on this user's traffic
                (:attr:`Preference.cost_factors`), so a user whose answers run long is not
                routed as if they were short. Without comparisons the result is the prior with
                that calibration. The service passes the user's last routed calls whose
                provider reported usage.
        """
        if not comparisons and not billed:
            return self.prior()
        known = {a.name: a for a in self.resolve(arms)} if arms else {}
        if not comparisons:  # the prior, with the costs calibrated on the billed calls
            none = np.zeros(0, np.int64)
            factors, default = self._cost_calibration(
                (), none, none, np.zeros((0, 0)), [], known, billed
            )
            return dataclasses.replace(
                self.prior(), cost_factors=factors, default_cost_factor=default
            )
        names = sorted({c.winner for c in comparisons} | {c.loser for c in comparisons})
        slot = {n: i for i, n in enumerate(names)}
        descs = [self._descriptor(n, known) for n in names]
        emb, tokens = self._comparison_inputs(comparisons)
        n = len(comparisons)
        win = np.asarray([slot[c.winner] for c in comparisons])
        lose = np.asarray([slot[c.loser] for c in comparisons])
        terms = np.asarray([[a.cost.per_call_usd, a.cost.per_input_token_usd] for a in descs])
        expected = terms[None, :, 0] + terms[None, :, 1] * tokens[:, None]  # (N, A)
        usd = expected.copy()  # the compared answers' logits see what they really cost
        rows = np.arange(n)
        usd[rows, win] = [c.winner_cost_usd for c in comparisons]
        usd[rows, lose] = [c.loser_cost_usd for c in comparisons]
        logits = self._logits(emb, usd, descs)
        tau = self.config.cost_scale_usd
        data = ComparisonData(
            arms=tuple(names),
            base=_base_logits(descs),
            win=win,
            lose=lose,
            win_logit=logits[rows, win],
            lose_logit=logits[rows, lose],
            win_cost=np.minimum([c.winner_cost_usd / tau for c in comparisons], 1.0),
            lose_cost=np.minimum([c.loser_cost_usd / tau for c in comparisons], 1.0),
        )
        if traffic is not None:
            traffic = np.asarray(traffic, np.float32)
            if traffic.ndim != 2 or traffic.shape[1] != self.config.embedding_dim:
                raise ConfigError(
                    f"adapt(traffic=...) takes an (M, {self.config.embedding_dim}) array of query "
                    f"embeddings from this router's embedder, got shape {traffic.shape}."
                )
        novelty = self.novelty(emb, traffic=traffic)
        posterior = infer_posterior(data, self.posterior_config, novelty=novelty)
        factors, default = self._cost_calibration(
            comparisons, win, lose, expected, names, known, billed
        )
        return self._preference(posterior, n, factors, default, novelty)

    def _cost_calibration(
        self,
        comparisons: Sequence[Comparison],
        win: np.ndarray,
        lose: np.ndarray,
        expected: np.ndarray,
        names: Sequence[str],
        known: Mapping[str, ArmDescriptor],
        billed: Sequence[BilledCall],
    ) -> tuple[dict[str, float], float]:
        """Cost factors per model (the compared and the billed ones) and the traffic-wide one.

        From the comparisons' billed answers (``win``/``lose`` index ``names``, ``expected``
        (N, len(names)) their expected costs) and the billed routed calls
        (:func:`_cost_factors`).
        """
        everyone = [*names, *sorted({b.model for b in billed} - set(names))]
        descs = [self._descriptor(m, known) for m in everyone]
        known_cost = np.asarray([a.name in self.catalog or a.name in known for a in descs])
        factors, default = _cost_factors(
            comparisons, win, lose, expected, known_cost, _billed_observations(billed, descs)
        )
        return dict(zip(everyone, factors.tolist(), strict=True)), default

    def _preference(
        self,
        posterior: UserPosterior,
        n: int,
        factors: dict[str, float],
        default_factor: float,
        novelty: float,
    ) -> Preference:
        cfg = self.posterior_config
        return Preference(
            posterior=posterior,
            n_comparisons=n,
            quality_weight=posterior.alpha_mean,
            cost_factors=factors,
            default_cost_factor=default_factor,
            alpha_posterior=tuple(posterior.alpha_distribution(cfg.alpha_grid).tolist()),
            novelty=float(novelty),
            novel_share=float(posterior.regime_distribution(len(cfg.regimes))[-1])
            if len(cfg.regimes) > 1
            else 0.0,
        )

    def _descriptor(self, name: str, known: Mapping[str, ArmDescriptor]) -> ArmDescriptor:
        """A compared model's descriptor (an average catalog model when it is unknown)."""
        arm = known.get(name) or self.catalog.get(name)
        if arm is not None:
            return arm
        return ArmDescriptor(name, CostModel(0.0, 0.0), self._neutral_profile, "unknown")

    def _comparison_inputs(
        self, comparisons: Sequence[Comparison]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Query embeddings (N, D) and prompt token counts (N,) of the comparisons."""
        d = self.config.embedding_dim
        emb = np.zeros((len(comparisons), d), np.float32)
        todo = [i for i, c in enumerate(comparisons) if c.embedding is None]
        if todo:
            emb[todo] = self.embedder.encode([comparisons[i].query or "" for i in todo])
        for i, c in enumerate(comparisons):
            if c.embedding is not None:
                if c.embedding.shape != (d,):
                    raise ConfigError(
                        f"comparison {i}: embedding has shape {c.embedding.shape}, expected ({d},)."
                    )
                emb[i] = c.embedding
        tokens = np.asarray(
            [
                c.tokens if c.tokens is not None else (estimate_tokens(c.query) if c.query else 0)
                for c in comparisons
            ],
            np.float64,
        )
        return emb, tokens

    def _estimates(
        self,
        embeddings: np.ndarray,
        tokens: np.ndarray,
        arms: Sequence[ArmDescriptor],
        preference: Preference,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Quality logits, expected USD cost and normalised cost, each (M, K), of ``arms``.

        The costs include the user's cost calibration (``preference``'s cost factors).
        """
        at = self._candidate_tensors(arms)
        factor = np.asarray([preference.cost_factor_for(a.name) for a in arms])
        tok = np.asarray(tokens, np.float64).reshape(-1)
        usd = (at.cost_terms[None, :, 0] + at.cost_terms[None, :, 1] * tok[:, None]) * factor[None]
        cost = np.minimum(usd / self.config.cost_scale_usd, 1.0)
        return self._logits(embeddings, usd, arms), usd, cost

    def _logits(
        self, embeddings: np.ndarray, usd: np.ndarray, arms: Sequence[ArmDescriptor]
    ) -> np.ndarray:
        """The quality head's logits (M, K) of ``arms`` on the queries, at these costs (M, K).

        Computed in numpy (:class:`~metarouter.inference.QualityHead`, built on first use):
        the same function as ``self.model.quality_logits`` to float32 rounding.
        """
        at = self._candidate_tensors(arms)
        return self._quality_head().logits(embeddings, usd, at.part).astype(np.float64)

    # -- routing --------------------------------------------------------------------------------
    def utilities_embeddings(
        self,
        embeddings: np.ndarray,
        tokens: np.ndarray,
        candidates: Sequence[Candidate],
        preference: Preference | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The posterior expected utilities behind :meth:`score_embeddings`, before any penalty.

        The decision under a cost penalty ``lam`` is ``argmax(utility - lam * cost)``, which is
        how a budget's pacing (:mod:`metarouter.budgets`) and its simulation route.

        Returns:
            ``(utility (n, K), expected quality (n, K), expected cost USD (n, K), normalised
            cost (n, K))``.
        """
        arms = self.resolve(candidates)
        emb = np.asarray(embeddings, np.float32).reshape(-1, self.config.embedding_dim)
        at = self._candidate_tensors(arms)
        names = [a.name for a in arms]
        pref = preference if preference is not None else self.prior()
        logits, usd, cost = self._estimates(emb, tokens, arms, pref)
        if preference is not None:
            util, quality = pref.posterior.expected_utility(logits, at.base, cost, names)
        else:  # a new user: each query's own novelty sets the regime odds
            util, quality = self._prior_utility(emb, logits, at.base, cost, names)
        return util, quality, usd, cost

    def score_embeddings(
        self,
        embeddings: np.ndarray,
        tokens: np.ndarray,
        candidates: Sequence[Candidate],
        preference: Preference | None = None,
        *,
        cost_penalty: float = 0.0,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Batched scoring from precomputed embeddings.

        Args:
            embeddings: (n, 384) query embeddings.
            tokens: (n,) prompt token counts.
            candidates: The candidate arms (names or descriptors).
            preference: The user's preference (default: the prior, with the queries' own
                novelty).
            cost_penalty: Extra weight on normalised cost on top of the user's own (>= 0; e.g.
                a budget's pacing multiplier): the decision maximises
                ``E[alpha q] - (E[1 - alpha] + cost_penalty) c``.

        Returns:
            ``(scores (n, K), expected quality (n, K), expected cost USD (n, K))``: scores are a
            softmax of the posterior expected utilities (their argmax is the Bayes decision).
        """
        util, quality, usd, cost = self.utilities_embeddings(
            embeddings, tokens, candidates, preference
        )
        return _decision_scores(util, cost, cost_penalty), quality, usd

    def _prior_utility(
        self,
        emb: np.ndarray,
        logits: np.ndarray,
        base: np.ndarray,
        cost: np.ndarray,
        names: Sequence[str],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Expected utility and quality under the prior, with per-query regime odds.

        Without comparisons the posterior is the prior, linear in the regime odds: the
        expected utility at a query's own novelty interpolates the familiar and novel priors,
        so a query is routed the same whether it comes alone or in a batch.
        """
        familiar, novel = self.prior(0.0), self.prior(1.0)
        u0, q0 = familiar.posterior.expected_utility(logits, base, cost, names)
        u1, q1 = novel.posterior.expected_utility(logits, base, cost, names)
        reference = self._reference_embeddings()
        w0, w1 = familiar.novel_share, novel.novel_share
        if len(reference) == 0 or w1 - w0 < 1e-9:  # no reference, or one regime only
            return u0, q0
        model = self.config.novelty_model()
        share = np.clip(model.probability(emb, reference), REGIME_FLOOR, 1 - REGIME_FLOOR)
        t = ((share - w0) / (w1 - w0))[:, None]
        return u0 + t * (u1 - u0), q0 + t * (q1 - q0)

    def _candidate_tensors(self, arms: Sequence[ArmDescriptor]) -> _ArmTensors:
        """The candidate set's arrays, built on first use and kept (LRU)."""
        key = tuple(id(a) for a in arms)  # the entry keeps the arms alive: ids stay unique
        with self._cache_lock:
            hit = self._arm_tensors.get(key)
            if hit is not None:
                self._arm_tensors.move_to_end(key)
                return hit
        cost_terms = np.asarray(
            [[a.cost.per_call_usd, a.cost.per_input_token_usd] for a in arms], np.float64
        ).reshape(-1, 2)
        cap = np.stack([a.capability for a in arms])
        entry = _ArmTensors(
            arms=tuple(arms),
            cost_terms=cost_terms,
            base=_base_logits(arms),
            part=self._quality_head().arm_part(cap),
        )
        with self._cache_lock:
            self._arm_tensors[key] = entry
            while len(self._arm_tensors) > _TENSOR_CACHE_SIZE:
                self._arm_tensors.popitem(last=False)
        return entry

    def route_embeddings(
        self,
        embeddings: np.ndarray,
        tokens: np.ndarray,
        candidates: Sequence[Candidate],
        preference: Preference | None = None,
        *,
        cost_penalty: float = 0.0,
    ) -> list[RoutingDecision]:
        """Route a batch of queries given their embeddings and token counts.

        ``cost_penalty``: see :meth:`score_embeddings`.
        """
        arms = self.resolve(candidates)
        utilities = self.utilities_embeddings(embeddings, tokens, arms, preference)
        return self.decisions(utilities, arms, preference, cost_penalty=cost_penalty)

    def decisions(
        self,
        utilities: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
        candidates: Sequence[Candidate],
        preference: Preference | None = None,
        *,
        cost_penalty: float = 0.0,
    ) -> list[RoutingDecision]:
        """The routing decisions from :meth:`utilities_embeddings`' output, under a cost penalty.

        One quality-head pass can serve several penalties (a budget's paced call and the
        choice it would have had without the budget): ``route_embeddings(e, t, c, p,
        cost_penalty=x)`` equals ``decisions(utilities_embeddings(e, t, c, p), c, p,
        cost_penalty=x)``.

        Args:
            utilities: ``(utility, expected quality, expected cost USD, normalised cost)``, each
                (n, K), as :meth:`utilities_embeddings` returns them for ``candidates``.
            candidates: The candidate arms, in the order of the arrays' columns.
            preference: The preference the utilities were computed with (None: the prior).
            cost_penalty: See :meth:`score_embeddings`.
        """
        util, quality, costs, cost = utilities
        names = [a.name for a in self.resolve(candidates)]
        probs = _decision_scores(util, cost, cost_penalty)
        weight = (
            preference.quality_weight if preference is not None else self.prior().quality_weight
        )
        # one conversion to Python floats per array (not per element): same values
        orders = np.argsort(-probs, axis=1, kind="stable").tolist()
        p_rows, q_rows, c_rows = probs.tolist(), quality.tolist(), costs.tolist()
        return [
            RoutingDecision(
                model=names[order[0]],
                scores=dict(zip(names, p_row, strict=True)),
                ranking=tuple(names[j] for j in order),
                expected_costs_usd=dict(zip(names, c_row, strict=True)),
                predicted_quality=dict(zip(names, q_row, strict=True)),
                quality_weight=weight,
            )
            for order, p_row, q_row, c_row in zip(orders, p_rows, q_rows, c_rows, strict=True)
        ]

    def route_batch(
        self,
        queries: Sequence[str],
        candidates: Sequence[Candidate],
        preference: Preference | None = None,
    ) -> list[RoutingDecision]:
        """Route many queries at once (one embedding batch, one policy pass)."""
        if isinstance(queries, str):
            raise ConfigError("route_batch() takes a list of queries; use route() for one.")
        emb = self.embedder.encode(list(queries))
        tokens = np.asarray([estimate_tokens(q) for q in queries], float)
        return self.route_embeddings(emb, tokens, candidates, preference)

    def route(
        self, query: str, candidates: Sequence[Candidate], preference: Preference | None = None
    ) -> RoutingDecision:
        """Route one query: the candidate that best fits this user's preference."""
        if not isinstance(query, str):
            raise ConfigError(f"route() takes the query text, got {type(query).__name__}.")
        emb = self.embedder.encode_one(query)[None, :]
        return self.route_embeddings(
            emb, np.asarray([estimate_tokens(query)], float), candidates, preference
        )[0]

    # -- choosing what to ask -------------------------------------------------------------------
    def comparison_values(
        self,
        embeddings: np.ndarray,
        tokens: np.ndarray,
        candidates: Sequence[Candidate],
        preference: Preference | None = None,
        *,
        traffic: tuple[np.ndarray, np.ndarray] | None = None,
        n_particles: int = 256,
        seed: int = 0,
    ) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """Expected value of asking the user about each candidate query and pair.

        The value of a comparison is the expected rise in the utility of this user's routing
        decisions once their answer is known (:func:`metarouter.posterior.comparison_value`),
        valued on a sample of their traffic.

        Args:
            embeddings: (Q, 384) embeddings of the candidate queries.
            tokens: (Q,) their prompt token counts.
            candidates: At least two candidates.
            preference: The user's current preference (default: the prior).
            traffic: ``(embeddings, tokens)`` of the traffic the decisions are valued on
                (default: the candidate queries themselves).
            n_particles: Posterior particles.
            seed: Seed of the particle draw (the result is deterministic for a seed).

        Returns:
            ``(values (Q, n_pairs), pairs)``: pairs are candidate index pairs.
        """
        arms = self.resolve(candidates)
        if len(arms) < 2:
            raise ConfigError("choosing a comparison needs at least two candidates.")
        emb = np.asarray(embeddings, np.float32).reshape(-1, self.config.embedding_dim)
        tok = np.asarray(tokens, np.float64).reshape(-1)
        t_emb, t_tok = traffic if traffic is not None else (emb, tok)
        t_emb = np.asarray(t_emb, np.float32).reshape(-1, self.config.embedding_dim)
        pref = preference if preference is not None else self.prior(self.novelty(t_emb))
        at = self._candidate_tensors(arms)
        names = [a.name for a in arms]
        c_logits, _, c_cost = self._estimates(emb, tok, arms, pref)
        t_logits, _, t_cost = self._estimates(t_emb, t_tok, arms, pref)
        pairs = [(i, j) for i in range(len(arms)) for j in range(i + 1, len(arms))]
        values = comparison_value(
            pref.posterior,
            names,
            c_logits,
            c_cost,
            t_logits,
            t_cost,
            at.base,
            self.posterior_config,
            pairs=pairs,
            n_particles=n_particles,
            rng=np.random.default_rng(seed),
        )
        return values, pairs

    def suggest_comparison(
        self,
        queries: Sequence[str],
        candidates: Sequence[Candidate],
        preference: Preference | None = None,
    ) -> tuple[int, tuple[str, str]]:
        """The query and the two candidates' answers worth showing this user next.

        Among ``queries`` (e.g. the user's recent traffic), the comparison with the highest
        expected value of information for their routing.

        Args:
            queries: Candidate queries (at least one).
            candidates: At least two candidates.
            preference: The user's current preference (default: the prior).

        Returns:
            ``(index into queries, (model a, model b))``.
        """
        if isinstance(queries, str) or not queries:
            raise ConfigError("suggest_comparison() takes a non-empty list of query texts.")
        emb = self.embedder.encode(list(queries))
        tokens = np.asarray([estimate_tokens(q) for q in queries], float)
        values, pairs = self.comparison_values(emb, tokens, candidates, preference)
        names = [a.name for a in self.resolve(candidates)]
        q, p = np.unravel_index(int(np.argmax(values)), values.shape)
        a, b = pairs[int(p)]
        return int(q), (names[a], names[b])

    def suggest_pair(
        self, query: str, candidates: Sequence[Candidate], preference: Preference | None = None
    ) -> tuple[str, str]:
        """The two candidates whose comparison on ``query`` is worth most to this user's routing.

        Bayesian experimental design: the pair whose answer is expected to improve the user's
        routing decisions most (expected value of information under the current posterior; see
        :meth:`suggest_comparison`).

        Args:
            query: The query both candidates would answer.
            candidates: At least two candidates.
            preference: The user's current preference (default: the prior).
        """
        if not isinstance(query, str):
            raise ConfigError(f"suggest_pair() takes the query text, got {type(query).__name__}.")
        return self.suggest_comparison([query], candidates, preference)[1]

    def __repr__(self) -> str:
        return (
            f"MetaRouter(catalog={len(self.catalog)} models, tau=${self.config.cost_scale_usd:.6f})"
        )
