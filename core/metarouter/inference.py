"""The quality head's routing-time forward pass in numpy (no torch call per routed query).

:meth:`metarouter.model.MetaRouterModel.quality_logits` is what routing asks of the network:
the quality head's logit for each (query, candidate) at the candidate's cost, with the prior
evidence of an arm without comparisons. Run through torch modules for one query and five
candidates it is ~40 small operators and most of a millisecond of framework overhead. Here the
same function is rearranged for inference, in float32 like the network:

* everything that depends on the weights alone (the prior evidence vector through the first
  layer, its bias) is computed once per router;
* everything that depends on a candidate alone (its profile's mean and learned projection
  through the first layer) once per candidate set (:class:`ArmPart`, cached by the router);
* per query: region weights, the projected query, and three per-(query, arm) scalars (cost,
  log cost, the profile read at the query) through the first layer, then two dense layers.

The first layer's matrix is split by input block, so the sums are in another order than one
matrix product: results agree with the torch module to float32 rounding (~1e-6), which
``tests/metarouter/test_inference.py`` checks along with identical routing decisions.
GELU is the exact (erf) form, with erf from Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7).

The head is built from the torch network, or from the router's saved tensors without importing
torch (:meth:`QualityHead.from_state`: the prior evidence is then the evidence network on a
zero input, computed here in float64), which is how a router for the ``static`` embedder routes
without torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from metarouter.errors import ConfigError, ModelLoadError

if TYPE_CHECKING:
    from metarouter.config import MetaRouterConfig
    from metarouter.model import MetaRouterModel

__all__ = ["ArmPart", "QualityHead", "check_state_shapes", "head_shapes"]

# features.py's constants (normalised cost floor and scale of its log)
_LOG_FLOOR = 1e-3
_LOG_SCALE = 5.0
_SQRT_HALF = np.float32(1.0 / np.sqrt(2.0))
_AS_P = np.float32(0.3275911)
_AS_A = tuple(
    np.float32(a) for a in (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
)


# state_dict names of the two small networks the head reads (policy._mlp, encoder._mlp)
_QUALITY_HEAD = "policy.quality_head"
_EVIDENCE_NET = "encoder.rho_evidence"
_LINEAR_LAYERS = (0, 2, 4)


def _f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def head_shapes(config: MetaRouterConfig) -> dict[str, tuple[int, ...]]:
    """Shapes of the saved tensors the numpy head reads, as ``config`` implies them."""
    d, p, q = config.embedding_dim, config.n_prototypes, config.query_dim
    a, e, h = config.arm_dim, config.evidence_dim, config.hidden_dim
    shapes: dict[str, tuple[int, ...]] = {
        "prototypes": (p, d),
        "query_proj.linear.weight": (q, d),
        "query_proj.linear.bias": (q,),
        "features.profile_proj.weight": (a, p),
        "features.profile_proj.bias": (a,),
    }
    for net, d_in, d_out in ((_QUALITY_HEAD, q + e + 4 + a, 1), (_EVIDENCE_NET, h + 1, e)):
        for i, (rows, cols) in zip(_LINEAR_LAYERS, ((h, d_in), (h, h), (d_out, h)), strict=True):
            shapes[f"{net}.{i}.weight"] = (rows, cols)
            shapes[f"{net}.{i}.bias"] = (rows,)
    return shapes


def check_state_shapes(
    expected: Mapping[str, tuple[int, ...]], state: Mapping[str, np.ndarray], what: str
) -> None:
    """Raise :class:`ModelLoadError` naming the first tensor missing or of another shape."""
    for name, shape in expected.items():
        found = state.get(name)
        if found is None or tuple(found.shape) != shape:
            detail = (
                f"tensor {name!r} is missing"
                if found is None
                else f"tensor {name!r} has shape {list(found.shape)} but config.json implies "
                f"{list(shape)}"
            )
            raise ModelLoadError(
                f"{what} do not match config.json ({detail}); nothing was loaded. "
                "Fix: keep the two files of one save together (re-download or re-save the "
                "router)."
            )


def _gelu64(x: np.ndarray) -> np.ndarray:
    """Exact GELU in float64 (math.erf), for the once-per-router prior evidence."""
    erf = np.asarray([math.erf(v) for v in (x / math.sqrt(2.0)).tolist()], np.float64)
    return 0.5 * x * (1.0 + erf.reshape(x.shape))


def _prior_evidence(state: Mapping[str, np.ndarray]) -> np.ndarray:
    """``ContextEncoder.prior_evidence()`` in numpy: the evidence network on a zero input."""
    (_, b0), (w1, b1), (w2, b2) = (
        (
            np.asarray(state[f"{_EVIDENCE_NET}.{i}.weight"], np.float64),
            np.asarray(state[f"{_EVIDENCE_NET}.{i}.bias"], np.float64),
        )
        for i in _LINEAR_LAYERS
    )
    h = _gelu64(b0)  # the first layer on zeros is its bias
    h = _gelu64(w1 @ h + b1)
    return _f32(w2 @ h + b2)


def _erf(x: np.ndarray) -> np.ndarray:
    """erf, elementwise, float32 (Abramowitz & Stegun 7.1.26; |error| < 1.5e-7)."""
    s = np.sign(x)
    # erf(4) is 1 in float32; the cap also keeps exp(-a*a) clear of slow subnormal floats
    a = np.minimum(np.abs(x), np.float32(4.0))
    t = 1.0 / (1.0 + _AS_P * a)
    a1, a2, a3, a4, a5 = _AS_A
    poly = ((((a5 * t + a4) * t + a3) * t + a2) * t + a1) * t
    return s * (1.0 - poly * np.exp(-a * a))


def _gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU, ``x * Phi(x)`` (torch's ``nn.GELU()`` default)."""
    return 0.5 * x * (1.0 + _erf(x * _SQRT_HALF))


@dataclass(frozen=True)
class ArmPart:
    """One candidate set's query-independent inputs.

    Attributes:
        cap_t: (P, K) capability profiles, transposed (the profile read is ``weights @ cap_t``).
        first: (K, H) the candidates' profile mean and projection through the first layer.
    """

    cap_t: np.ndarray
    first: np.ndarray


class QualityHead:
    """:meth:`MetaRouterModel.quality_logits` for inference, on numpy arrays.

    Built from the torch network (``QualityHead(model)``) or, without importing torch, from the
    saved weights (:meth:`from_state`, how a router for a torch-free embedder loads).

    Args:
        model: The trained network (its weights are copied; later changes are not seen).
    """

    def __init__(self, model: MetaRouterModel) -> None:
        import torch

        with torch.inference_mode():
            prior_ev = _f32(model.encoder.prior_evidence().detach().cpu().numpy())
        state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
        self._setup(model.config, state, prior_ev)

    @classmethod
    def from_state(cls, config: MetaRouterConfig, state: Mapping[str, np.ndarray]) -> QualityHead:
        """The head from a router's saved tensors (``state_dict`` names), without torch.

        The prior evidence (the evidence network on an arm without comparisons) is computed
        here in float64 and rounded to float32, so logits agree with ``QualityHead(model)``'s
        to float32 rounding, not bit for bit.

        Raises:
            ModelLoadError: A tensor the head reads is missing or has another shape than
                ``config`` implies.
        """
        check_state_shapes(head_shapes(config), state, "the saved weights")
        head = cls.__new__(cls)
        head._setup(config, state, _prior_evidence(state))
        return head

    def _setup(
        self, cfg: MetaRouterConfig, state: Mapping[str, np.ndarray], prior_ev: np.ndarray
    ) -> None:
        def arr(name: str) -> np.ndarray:
            return _f32(state[name])

        self._proto_t = arr("prototypes").T / np.float32(cfg.prototype_temperature)
        self._tau = np.float32(cfg.cost_scale_usd)
        self._q_w = arr("query_proj.linear.weight").T  # (D, Q)
        self._q_b = arr("query_proj.linear.bias")
        self._p_w = arr("features.profile_proj.weight").T  # (P, A)
        self._p_b = arr("features.profile_proj.bias")
        names = [f"{_QUALITY_HEAD}.{i}" for i in _LINEAR_LAYERS]
        if any(f"{n}.weight" not in state for n in names) or f"{_QUALITY_HEAD}.6.weight" in state:
            raise ConfigError("the quality head is not three linear layers with GELUs between.")
        (w1, b1), (w2, b2), (w3, b3) = ((arr(f"{n}.weight"), arr(f"{n}.bias")) for n in names)
        q, e = cfg.query_dim, cfg.evidence_dim
        self._w1_q = np.ascontiguousarray(w1[:, :q].T)  # (Q, H)
        self._const = prior_ev @ w1[:, q : q + e].T + b1  # (H,)
        f = q + e
        self._w1_cost = w1[:, f].copy()
        self._w1_logc = w1[:, f + 1].copy()
        self._w1_read = w1[:, f + 2].copy()
        self._w1_mean = w1[:, f + 3].copy()
        self._w1_proj = np.ascontiguousarray(w1[:, f + 4 :].T)  # (A, H)
        self._w2, self._b2 = np.ascontiguousarray(w2.T), b2
        self._w3, self._b3 = w3[0].copy(), np.float32(b3[0])

    def arm_part(self, capability: np.ndarray) -> ArmPart:
        """The candidate set's query-independent part, from its (K, P) profiles."""
        cap = np.asarray(capability, np.float32)
        mean = cap.mean(-1, dtype=np.float32)
        proj = np.tanh((cap - mean[:, None]) @ self._p_w + self._p_b)
        first = mean[:, None] * self._w1_mean + proj @ self._w1_proj
        return ArmPart(np.ascontiguousarray(cap.T), first.astype(np.float32))

    def logits(self, embeddings: np.ndarray, cost_usd: np.ndarray, arms: ArmPart) -> np.ndarray:
        """Quality logits (M, K) of the candidates on (M, D) queries at (M, K) USD costs."""
        emb = np.asarray(embeddings, np.float32)
        z = emb @ self._proto_t
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        read = z @ arms.cap_t  # (M, K)
        c = np.asarray(cost_usd, np.float32) / self._tau
        qx = np.tanh(emb @ self._q_w + self._q_b)  # (M, Q)
        h = (qx @ self._w1_q + self._const)[:, None, :] + arms.first[None, :, :]
        h += np.minimum(c, np.float32(1.0))[..., None] * self._w1_cost
        h += (np.log(c + np.float32(_LOG_FLOOR)) / np.float32(_LOG_SCALE))[..., None] * (
            self._w1_logc
        )
        h += read[..., None] * self._w1_read
        h = _gelu(h)
        h = _gelu(h @ self._w2 + self._b2)
        return np.asarray(h @ self._w3 + self._b3, np.float32)
