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


def test_the_head_built_from_saved_tensors_without_torch_gives_the_same_logits(
    default_router, llmrouter_heldout
):
    from metarouter.inference import QualityHead

    router = default_router
    state = {k: v.numpy() for k, v in router.model.state_dict().items()}
    from_state = QualityHead.from_state(router.config, state)
    from_network = QualityHead(router.model)
    np.testing.assert_allclose(from_state._const, from_network._const, atol=1e-6)
    arms = list(router.catalog.values())[:5]
    cap = np.stack([a.capability for a in arms])
    emb = llmrouter_heldout.embeddings[:300]
    usd = np.full((len(emb), len(arms)), 1e-4)
    a = from_state.logits(emb, usd, from_state.arm_part(cap))
    b = from_network.logits(emb, usd, from_network.arm_part(cap))
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert (a.argmax(1) == b.argmax(1)).all()


def test_saved_tensors_of_another_shape_are_refused_with_the_tensor_named(default_router):
    import pytest
    from metarouter.errors import ModelLoadError
    from metarouter.inference import QualityHead

    state = {k: v.numpy() for k, v in default_router.model.state_dict().items()}
    good = state["policy.quality_head.2.weight"]
    state["policy.quality_head.2.weight"] = good[:, :-1]
    with pytest.raises(ModelLoadError, match=r"policy\.quality_head\.2\.weight.*re-save"):
        QualityHead.from_state(default_router.config, state)
    state["policy.quality_head.2.weight"] = good
    del state["encoder.rho_evidence.0.bias"]
    with pytest.raises(ModelLoadError, match=r"rho_evidence\.0\.bias' is missing"):
        QualityHead.from_state(default_router.config, state)
