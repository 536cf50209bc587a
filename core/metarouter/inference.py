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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from metarouter.errors import ConfigError

if TYPE_CHECKING:
    from metarouter.model import MetaRouterModel

__all__ = ["ArmPart", "QualityHead"]

# features.py's constants (normalised cost floor and scale of its log)
_LOG_FLOOR = 1e-3
_LOG_SCALE = 5.0
_SQRT_HALF = np.float32(1.0 / np.sqrt(2.0))
_AS_P = np.float32(0.3275911)
_AS_A = tuple(
    np.float32(a) for a in (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
)


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

    Args:
        model: The trained network (its weights are copied; later changes are not seen).
    """

    def __init__(self, model: MetaRouterModel) -> None:
        import torch

        cfg = model.config

        def arr(t: torch.Tensor) -> np.ndarray:
            return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)

        with torch.inference_mode():
            prior_ev = arr(model.encoder.prior_evidence())
        self._proto_t = arr(model.prototypes).T / np.float32(cfg.prototype_temperature)
        self._tau = np.float32(cfg.cost_scale_usd)
        self._q_w = arr(model.query_proj.linear.weight).T  # (D, Q)
        self._q_b = arr(model.query_proj.linear.bias)
        self._p_w = arr(model.features.profile_proj.weight).T  # (P, A)
        self._p_b = arr(model.features.profile_proj.bias)
        layers = [m for m in model.policy.quality_head if isinstance(m, torch.nn.Linear)]
        if len(layers) != 3:  # pragma: no cover - the architecture of policy._mlp
            raise ConfigError("the quality head is not three linear layers with GELUs between.")
        first, second, third = layers
        w1, b1 = arr(first.weight), arr(first.bias)  # (H, Q + E + 4 + A)
        q, e = cfg.query_dim, cfg.evidence_dim
        self._w1_q = np.ascontiguousarray(w1[:, :q].T)  # (Q, H)
        self._const = prior_ev @ w1[:, q : q + e].T + b1  # (H,)
        f = q + e
        self._w1_cost = w1[:, f].copy()
        self._w1_logc = w1[:, f + 1].copy()
        self._w1_read = w1[:, f + 2].copy()
        self._w1_mean = w1[:, f + 3].copy()
        self._w1_proj = np.ascontiguousarray(w1[:, f + 4 :].T)  # (A, H)
        self._w2, self._b2 = np.ascontiguousarray(arr(second.weight).T), arr(second.bias)
        self._w3, self._b3 = arr(third.weight)[0].copy(), np.float32(arr(third.bias)[0])

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
