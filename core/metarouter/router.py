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
from typing import TYPE_CHECKING

import numpy as np

from metarouter._version import __version__
from metarouter.arms import ArmDescriptor, CostModel
from metarouter.config import FORMAT_VERSION, MetaRouterConfig
from metarouter.embeddings import Embedder
from metarouter.errors import ConfigError, ModelLoadError, UnknownArmError
from metarouter.pricing import Price, estimate_tokens
from metarouter.types import Comparison, Preference, RoutingDecision

if TYPE_CHECKING:
    import torch

    from metarouter.encoder import SupportBatch
    from metarouter.model import MetaRouterModel

__all__ = ["CONFIG_FILE", "WEIGHTS_FILE", "Candidate", "MetaRouter", "default_router_dir"]

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
_FORMAT_NAME = "metarouter-router"

Candidate = str | ArmDescriptor

#: Candidate sets and (preference, candidate set) pairs whose tensors are kept per router.
_TENSOR_CACHE_SIZE = 64


@dataclass(frozen=True)
class _ArmTensors:
    """Tensors of one candidate set, built once (the descriptors are kept alive with them)."""

    arms: tuple[ArmDescriptor, ...]
    cap: torch.Tensor  # (1, K, P)
    cost: torch.Tensor  # (1, K, 2) float64
    ids: torch.Tensor  # (1, K)
    mask: torch.Tensor  # (1, K) bool
    cost_terms: np.ndarray  # (K, 2)


@dataclass(frozen=True)
class _PreferenceTensors:
    """A preference's tensors for one candidate set."""

    preference: Preference
    arms: tuple[ArmDescriptor, ...]
    z: torch.Tensor  # (1, L)
    evidence: torch.Tensor  # (1, K, E)
    cost_factor: torch.Tensor  # (1, K)
    factor: np.ndarray  # (K,)


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


def _check_weight_shapes(config: MetaRouterConfig, weights: Path) -> None:
    """Refuse weights whose tensors lack the shapes ``config`` implies, before allocating.

    A tampered ``config.json`` (``hidden_dim=20000``) would otherwise allocate gigabytes
    before the mismatch shows.

    Raises:
        ModelLoadError: Names the first tensor that differs.
    """
    import torch
    from safetensors import SafetensorError, safe_open

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
    try:
        with safe_open(str(weights), "pt") as fh:
            found = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}  # noqa: SIM118 - not a dict
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelLoadError(
            f"{weights}: corrupted weights ({exc}). Fix: re-save or retrain the router."
        ) from exc
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    wrong = [k for k in expected if k in found and expected[k] != found[k]]
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


def default_router_dir() -> Path:
    """Folder of the router bundled with the package (trained on the bundled LLMRouter data)."""
    return Path(str(resources.files("metarouter") / "weights" / "default"))


class MetaRouter:
    """A meta-trained contextual-bandit router (context encoder + per-arm policy).

    Args:
        model: The trained network.
        catalog: Descriptors of the arms known at training time.
        embedder: Query embedder (default: a new all-MiniLM-L6-v2 :class:`Embedder`).

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
        self.model = model.eval()
        self.config: MetaRouterConfig = model.config
        self.catalog: dict[str, ArmDescriptor] = {a.name: a for a in catalog}
        self._embedder = embedder
        self._prior: Preference | None = None
        self._cache_lock = threading.Lock()
        self._arm_tensors: OrderedDict[tuple[int, ...], _ArmTensors] = OrderedDict()
        self._pref_tensors: OrderedDict[tuple[int, ...], _PreferenceTensors] = OrderedDict()
        self._neutral_profile = (
            np.mean([a.capability for a in catalog], axis=0).astype(np.float32)
            if catalog
            else np.full(self.config.n_prototypes, 0.5, np.float32)
        )

    # -- construction ---------------------------------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        """The query embedder (created on first use)."""
        if self._embedder is None:
            self._embedder = Embedder()
        return self._embedder

    @classmethod
    def default(cls, embedder: Embedder | None = None) -> MetaRouter:
        """The router bundled with the package (no training step needed)."""
        return cls.from_pretrained(default_router_dir(), embedder=embedder)

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

        Raises:
            ModelLoadError: The folder or a file is missing, unreadable, from an incompatible
                format version, or the weights do not match the config.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from metarouter.model import MetaRouterModel

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
        _check_weight_shapes(config, w_path)
        try:
            state = load_file(str(w_path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelLoadError(
                f"{w_path}: corrupted weights ({exc}). Fix: re-save or retrain the router."
            ) from exc
        model = MetaRouterModel(config)  # the shapes were checked: no surprise allocation
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelLoadError(
                f"{w_path}: weights do not match {CONFIG_FILE} ({str(exc).splitlines()[0]}). "
                "Fix: keep the two files of one save together."
            ) from exc
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
            name, self.model.get_prototypes(), emb, np.asarray(qualities, float), price=price
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
    def prior(self) -> Preference:
        """The preference of a user with no comparisons yet."""
        if self._prior is None:
            self._prior = self.adapt([])
        return self._prior

    def adapt(
        self,
        comparisons: Sequence[Comparison],
        *,
        arms: Iterable[Candidate] = (),
        refine_steps: int = 0,
    ) -> Preference:
        """Infer a user's preference from their comparisons (an encoder forward pass).

        Args:
            comparisons: The user's pairwise feedback (any number, including none).
            arms: Descriptors of compared models that are not in the catalog; models known
                neither way are treated as an average catalog model.
            refine_steps: Optional gradient steps on z alone that raise the Bradley-Terry
                likelihood of the comparisons under the policy's scores (0 = pure forward).
        """
        import torch

        from metarouter.encoder import cost_log_factors

        known = {a.name: a for a in self.resolve(arms)} if arms else {}
        names = sorted({c.winner for c in comparisons} | {c.loser for c in comparisons})
        ids = {n: i for i, n in enumerate(names)}
        refine = refine_steps > 0 and bool(comparisons)
        # inference_mode is faster than no_grad, but its tensors cannot enter the autograd
        # graph that the refinement steps build
        no_grad = torch.no_grad if refine else torch.inference_mode
        with no_grad():
            support = self._support(comparisons, known, ids)
            arm_ids = torch.arange(len(names) + 1).unsqueeze(0)  # last id: never compared
            # per-comparison features, the quality head's beliefs and the posterior are
            # computed once, not once per read-out
            items = self.model.encoder.item_features(support)
            item_quality = self.model.item_quality(support, items)
            posterior_b = self.model.encoder.posterior(support, item_quality)
            z = self.model.encoder(support, item_quality, posterior=posterior_b, items=items)
            ev = self.model.evidence(support, arm_ids, z, items)[0]
            factors = torch.exp(cost_log_factors(support, arm_ids))[0]
            posterior = posterior_b[0]
        if refine:
            z = self._refine(z, ev, support, refine_steps)
        with no_grad():
            alpha = float(self.model.policy.alpha(z)[0])
        return Preference(
            z=z[0].detach().numpy().astype(np.float32),
            evidence={n: ev[i].numpy().astype(np.float32) for n, i in ids.items()},
            default_evidence=ev[len(names)].numpy().astype(np.float32),
            n_comparisons=len(comparisons),
            quality_weight=alpha,
            cost_factors={n: float(factors[i]) for n, i in ids.items()},
            default_cost_factor=float(factors[len(names)]),
            alpha_posterior=tuple(float(v) for v in posterior),
        )

    def _profile_of(self, name: str, known: Mapping[str, ArmDescriptor]) -> np.ndarray:
        if name in known:
            return known[name].capability
        if name in self.catalog:
            return self.catalog[name].capability
        return self._neutral_profile

    def _expected_cost(
        self, c: Comparison, name: str, observed: float, known: Mapping[str, ArmDescriptor]
    ) -> float:
        """What the arm's cost model expected for the comparison's query (observed if unknown)."""
        arm = known.get(name) or self.catalog.get(name)
        tokens = (
            c.tokens
            if c.tokens is not None
            else (estimate_tokens(c.query) if c.query is not None else None)
        )
        if arm is None or tokens is None:
            return observed
        return float(arm.cost.estimate(tokens))

    def _support(
        self,
        comparisons: Sequence[Comparison],
        known: Mapping[str, ArmDescriptor],
        ids: Mapping[str, int],
    ) -> SupportBatch:
        import torch

        from metarouter.encoder import SupportBatch

        n, d, p = len(comparisons), self.config.embedding_dim, self.config.n_prototypes
        emb = np.zeros((max(n, 1), d), np.float32)
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
        q = torch.as_tensor(emb).unsqueeze(0)
        win_cap = np.zeros((max(n, 1), p), np.float32)
        lose_cap = np.zeros_like(win_cap)
        for i, c in enumerate(comparisons):
            win_cap[i] = self._profile_of(c.winner, known)
            lose_cap[i] = self._profile_of(c.loser, known)
        mask = torch.zeros(1, max(n, 1), dtype=torch.bool)
        mask[0, :n] = True

        def col(values: list[float]) -> torch.Tensor:
            out = torch.zeros(1, max(n, 1))
            out[0, :n] = torch.as_tensor(values, dtype=torch.float32)
            return out

        def idcol(values: list[int]) -> torch.Tensor:
            out = torch.full((1, max(n, 1)), -1, dtype=torch.long)
            out[0, :n] = torch.as_tensor(values, dtype=torch.long)
            return out

        w = self.model.region_weights(q)  # the caller holds no_grad or inference_mode
        return SupportBatch(
            q=q,
            w=w,
            mask=mask,
            win_cap=torch.as_tensor(win_cap).unsqueeze(0),
            lose_cap=torch.as_tensor(lose_cap).unsqueeze(0),
            win_cost=col([c.winner_cost_usd for c in comparisons]),
            lose_cost=col([c.loser_cost_usd for c in comparisons]),
            win_est=col(
                [self._expected_cost(c, c.winner, c.winner_cost_usd, known) for c in comparisons]
            ),
            lose_est=col(
                [self._expected_cost(c, c.loser, c.loser_cost_usd, known) for c in comparisons]
            ),
            win_id=idcol([ids[c.winner] for c in comparisons]),
            lose_id=idcol([ids[c.loser] for c in comparisons]),
        )

    def _refine(
        self, z0: torch.Tensor, ev: torch.Tensor, support: SupportBatch, steps: int
    ) -> torch.Tensor:
        """Gradient steps on z only: maximise the BT likelihood of the comparisons."""
        import torch

        from metarouter.model import CandidateBatch

        n = int(support["mask"].sum())
        win_ids, lose_ids = support["win_id"][0, :n], support["lose_id"][0, :n]
        arms = CandidateBatch(
            cap=torch.stack([support["win_cap"][0, :n], support["lose_cap"][0, :n]], 1),
            cost=torch.zeros(n, 2, 2, dtype=torch.float64),
            ids=torch.stack([win_ids, lose_ids], 1),
            mask=torch.ones(n, 2, dtype=torch.bool),
        )
        # observed costs enter as the per-call term of a zero-slope cost model
        arms["cost"][:, 0, 0] = support["win_cost"][0, :n].double()
        arms["cost"][:, 1, 0] = support["lose_cost"][0, :n].double()
        evid = torch.stack([ev[win_ids], ev[lose_ids]], 1)
        z = z0.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=0.05)
        q = support["q"][0, :n].unsqueeze(1)
        for _ in range(steps):
            scores, _ = self.model.score(q, torch.zeros(n, 1), arms, z.expand(n, -1), evid)
            margin = scores[:, 0, 0] - scores[:, 0, 1]
            loss = torch.nn.functional.softplus(-margin).mean() + 0.1 * ((z - z0) ** 2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return z.detach()

    # -- routing --------------------------------------------------------------------------------
    def score_embeddings(
        self,
        embeddings: np.ndarray,
        tokens: np.ndarray,
        candidates: Sequence[Candidate],
        preference: Preference | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Batched scoring from precomputed embeddings.

        Args:
            embeddings: (n, 384) query embeddings.
            tokens: (n,) prompt token counts.
            candidates: The candidate arms (names or descriptors).
            preference: The user's preference (default: the prior).

        Returns:
            ``(probabilities (n, K), predicted quality (n, K), expected cost USD (n, K))``.
        """
        import torch

        from metarouter.model import CandidateBatch

        arms = self.resolve(candidates)
        pref = preference or self.prior()
        at = self._candidate_tensors(arms)
        pt = self._preference_tensors(pref, at)
        with torch.inference_mode():
            emb = torch.tensor(np.asarray(embeddings, np.float32)).unsqueeze(0)
            tok = torch.tensor(np.asarray(tokens, np.float32)).unsqueeze(0)
            batch = CandidateBatch(
                cap=at.cap, cost=at.cost, ids=at.ids, mask=at.mask, cost_factor=pt.cost_factor
            )
            scores, q_logit = self.model.score(emb, tok, batch, pt.z, pt.evidence)
            probs = torch.softmax(scores[0], -1).numpy()
            quality = torch.sigmoid(q_logit[0]).numpy()
        cost_terms = at.cost_terms
        costs = (
            cost_terms[:, 0][None, :]
            + cost_terms[:, 1][None, :] * np.asarray(tokens, float)[:, None]
        ) * pt.factor[None, :]
        return probs, quality, costs

    def _candidate_tensors(self, arms: Sequence[ArmDescriptor]) -> _ArmTensors:
        """The candidate set's tensors, built on first use and kept (LRU)."""
        import torch

        key = tuple(id(a) for a in arms)  # the entry keeps the arms alive: ids stay unique
        with self._cache_lock:
            hit = self._arm_tensors.get(key)
            if hit is not None:
                self._arm_tensors.move_to_end(key)
                return hit
        cost_terms = np.asarray([[a.cost.per_call_usd, a.cost.per_input_token_usd] for a in arms])
        entry = _ArmTensors(
            arms=tuple(arms),
            cap=torch.as_tensor(np.stack([a.capability for a in arms])).unsqueeze(0),
            cost=torch.as_tensor(cost_terms, dtype=torch.float64).unsqueeze(0),
            ids=torch.arange(len(arms)).unsqueeze(0),
            mask=torch.ones(1, len(arms), dtype=torch.bool),
            cost_terms=cost_terms,
        )
        with self._cache_lock:
            self._arm_tensors[key] = entry
            while len(self._arm_tensors) > _TENSOR_CACHE_SIZE:
                self._arm_tensors.popitem(last=False)
        return entry

    def _preference_tensors(self, pref: Preference, at: _ArmTensors) -> _PreferenceTensors:
        """The preference's tensors for a candidate set, built on first use and kept (LRU)."""
        import torch

        key = (id(pref), *(id(a) for a in at.arms))  # the entry keeps pref and arms alive
        with self._cache_lock:
            hit = self._pref_tensors.get(key)
            if hit is not None:
                self._pref_tensors.move_to_end(key)
                return hit
        arms = at.arms
        entry = _PreferenceTensors(
            preference=pref,
            arms=arms,
            z=torch.as_tensor(pref.z).unsqueeze(0),
            evidence=torch.as_tensor(np.stack([pref.evidence_for(a.name) for a in arms])).unsqueeze(
                0
            ),
            cost_factor=torch.as_tensor([[pref.cost_factor_for(a.name) for a in arms]]),
            factor=np.asarray([pref.cost_factor_for(a.name) for a in arms]),
        )
        with self._cache_lock:
            self._pref_tensors[key] = entry
            while len(self._pref_tensors) > _TENSOR_CACHE_SIZE:
                self._pref_tensors.popitem(last=False)
        return entry

    def route_embeddings(
        self,
        embeddings: np.ndarray,
        tokens: np.ndarray,
        candidates: Sequence[Candidate],
        preference: Preference | None = None,
    ) -> list[RoutingDecision]:
        """Route a batch of queries given their embeddings and token counts."""
        arms = self.resolve(candidates)
        names = [a.name for a in arms]
        probs, quality, costs = self.score_embeddings(embeddings, tokens, arms, preference)
        pref = preference or self.prior()
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
                quality_weight=pref.quality_weight,
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

    def suggest_pair(
        self, query: str, candidates: Sequence[Candidate], preference: Preference | None = None
    ) -> tuple[str, str]:
        """The two candidates whose comparison on ``query`` says most about this user.

        Bayesian experimental design: for every pair, the expected information gain about the
        user's quality weight from their answer, under the preference's current posterior, the
        router's quality estimates for this query and the candidates' expected costs (the same
        Bradley-Terry model the encoder uses). Ties are broken towards the routed choice.

        Args:
            query: The query both candidates would answer.
            candidates: At least two candidates.
            preference: The user's current preference (default: the prior).
        """
        from metarouter.encoder import pair_information

        arms = self.resolve(candidates)
        if len(arms) < 2:
            raise ConfigError("suggest_pair() needs at least two candidates.")
        pref = preference or self.prior()
        emb = self.embedder.encode_one(query)[None, :]
        probs, quality, costs = self.score_embeddings(
            emb, np.asarray([estimate_tokens(query)], float), arms, pref
        )
        post = np.asarray(pref.alpha_posterior or self.prior().alpha_posterior, np.float64)
        cn = np.minimum(costs[0] / self.config.cost_scale_usd, 1.0)
        best, pair = -1.0, (0, 1)
        for i in range(len(arms)):
            for j in range(i + 1, len(arms)):
                gain = pair_information(post, quality[0, i], quality[0, j], cn[i], cn[j])
                gain += 1e-6 * (probs[0, i] + probs[0, j])
                if gain > best:
                    best, pair = gain, (i, j)
        return arms[pair[0]].name, arms[pair[1]].name

    def __repr__(self) -> str:
        return (
            f"MetaRouter(catalog={len(self.catalog)} models, tau=${self.config.cost_scale_usd:.6f})"
        )
