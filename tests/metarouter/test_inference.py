"""The numpy quality head gives the torch network's logits and the same routing decisions."""

from __future__ import annotations

import math

import numpy as np
import torch
from metarouter.inference import _gelu


def test_gelu_is_the_exact_erf_form_to_float32_precision():
    x = np.linspace(-9, 9, 4001).astype(np.float32)
    exact = np.asarray([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(float)])
    np.testing.assert_allclose(_gelu(x), exact, atol=1e-6)
    torch_gelu = torch.nn.functional.gelu(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(_gelu(x), torch_gelu, atol=1e-6)


def test_numpy_logits_match_the_torch_network_and_route_the_same(default_router, llmrouter_heldout):
    router = default_router
    arms = list(router.catalog.values())[:5]
    emb = llmrouter_heldout.embeddings[:300]
    tok = llmrouter_heldout.tokens[:300]
    at = router._candidate_tensors(arms)
    usd = at.cost_terms[None, :, 0] + at.cost_terms[None, :, 1] * tok[:, None]
    fast = router._logits(emb, usd, arms)
    cap = torch.as_tensor(np.stack([a.capability for a in arms])).unsqueeze(0)
    with torch.inference_mode():
        ref = (
            router.model.quality_logits(
                torch.as_tensor(emb).unsqueeze(0), torch.as_tensor(usd).unsqueeze(0), cap
            )[0]
            .double()
            .numpy()
        )
    np.testing.assert_allclose(fast, ref, atol=2e-5)
    assert (fast.argmax(1) == ref.argmax(1)).all()
    one = np.concatenate([router._logits(emb[i : i + 1], usd[i : i + 1], arms) for i in range(20)])
    np.testing.assert_allclose(one, fast[:20], atol=1e-5)  # a query alone or in a batch
