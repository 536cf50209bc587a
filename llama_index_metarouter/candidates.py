"""Candidate models: a LlamaIndex LLM plus what the router needs to know about it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llama_index.core.base.llms.types import LLMMetadata
from llama_index.core.constants import DEFAULT_CONTEXT_WINDOW, DEFAULT_NUM_OUTPUTS
from llama_index.core.llms import LLM
from llama_index.core.llms.function_calling import FunctionCallingLLM
from metarouter.arms import ArmDescriptor
from metarouter.errors import ConfigError
from metarouter.pricing import DEFAULT_OUTPUT_TOKENS, Price

if TYPE_CHECKING:
    from metarouter.service import ArmSpec

__all__ = [
    "Candidate",
    "CandidateLike",
    "can_call_tools",
    "dispatched_llm",
    "merged_metadata",
    "resolve_candidates",
]


@dataclass(frozen=True)
class Candidate:
    """A candidate LlamaIndex LLM and how the router should see it.

    A model named in the router's catalog (``MetaRouter.default().catalog``) needs no
    description; pass the LLM itself. Any other model needs its price and either ``like`` (a
    catalog model with a similar capability profile) or ``quality`` (a flat expected quality).
    A price is also what turns the token usage a candidate reports into a cost in USD.

    Attributes:
        llm: The LlamaIndex LLM to call.
        price: USD per 1M input/output tokens: a :class:`~metarouter.pricing.Price` or an
            ``(input, output)`` pair.
        like: A catalog model with a similar capability profile.
        quality: A flat expected quality in [0, 1], when no ``like``.
        descriptor: A ready :class:`~metarouter.arms.ArmDescriptor` (overrides the rest).
        output_tokens: Expected answer length for the cost model of a new model.

    Example:
        >>> Candidate(my_llm, price=(0.15, 0.6), like="qwen2.5-7b-instruct")  # doctest: +SKIP
    """

    llm: LLM
    price: Price | tuple[float, float] | None = None
    like: str | None = None
    quality: float | None = None
    descriptor: ArmDescriptor | None = None
    output_tokens: int = DEFAULT_OUTPUT_TOKENS

    def arm(self, name: str) -> ArmSpec:
        """The core's :class:`~metarouter.service.ArmSpec` for this candidate."""
        from metarouter.service import ArmSpec

        price = self.price
        if price is not None and not isinstance(price, Price):
            try:
                price = Price(float(price[0]), float(price[1]))
            except (TypeError, ValueError, IndexError) as exc:
                raise ConfigError(
                    f"candidate {name!r}: price must be Price(input_per_million, "
                    f"output_per_million) or an (input, output) pair of USD per 1M tokens, got "
                    f"{self.price!r}."
                ) from exc
        return ArmSpec(
            name,
            price=price,
            like=self.like,
            quality=self.quality,
            descriptor=self.descriptor,
            output_tokens=self.output_tokens,
        )

    @property
    def described(self) -> bool:
        """Whether anything beyond the LLM was given."""
        return any(v is not None for v in (self.price, self.like, self.quality, self.descriptor))


CandidateLike = LLM | Candidate


def resolve_candidates(
    candidates: Mapping[str, CandidateLike],
    arms: Sequence[ArmSpec] = (),
) -> tuple[dict[str, LLM], list[ArmSpec], bool]:
    """Split a ``name -> LLM | Candidate`` mapping into the LLMs and the core's arm specs.

    Args:
        candidates: ``name -> LLM | Candidate``.
        arms: Descriptions given separately as core ``ArmSpec`` (the LangChain adapter's style).

    Returns:
        ``(llms, arms, described)``: the LLM of each name, an arm spec per name (in order),
        and whether any candidate carried a description (price, like, quality, descriptor).

    Raises:
        ConfigError: The mapping is empty, a name is not a non-empty string, a value is
            neither a LlamaIndex LLM nor a :class:`Candidate`, or ``arms`` names no candidate
            or one described twice.
    """
    if not isinstance(candidates, Mapping) or not candidates:
        raise ConfigError(
            "MetaRouterLLM needs a non-empty mapping of candidate name -> LlamaIndex LLM, e.g. "
            "{'gemma-2-9b-it': llm_a, 'gpt-4o-mini': Candidate(llm_b, price=(0.15, 0.6), "
            "like='qwen2.5-7b-instruct')}."
        )
    separate = {spec.name: spec for spec in arms}
    stray = sorted(set(separate) - set(candidates))
    if stray:
        raise ConfigError(
            f"arms {stray} describe no candidate; candidates are {list(candidates)}. Fix: use "
            "the same names in candidates and arms."
        )
    llms: dict[str, LLM] = {}
    specs: list[ArmSpec] = []
    described = bool(separate)
    for name, value in candidates.items():
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"candidate names must be non-empty strings, got {name!r}.")
        candidate = value if isinstance(value, Candidate) else Candidate(value)
        if not isinstance(candidate.llm, LLM):
            raise ConfigError(
                f"candidate {name!r} is a {type(candidate.llm).__name__}, not a LlamaIndex LLM "
                "(llama_index.core.llms.LLM). Fix: pass e.g. OpenAI(model=...) or "
                "Candidate(llm, price=...)."
            )
        if name in separate and candidate.described:
            raise ConfigError(
                f"candidate {name!r} is described twice (Candidate(...) and arms=); keep one."
            )
        described = described or candidate.described
        llms[name] = candidate.llm
        specs.append(separate.get(name) or candidate.arm(name))
    return llms, specs, described


def dispatched_llm(llm: LLM) -> LLM:
    """The candidate as the router calls it: asking for token usage in streams where it can.

    OpenAI-compatible servers send no usage in a stream unless asked, and a streamed call
    without usage has no real cost. LlamaIndex's ``OpenAI`` and ``OpenAILike`` send
    ``additional_kwargs["stream_options"]`` on streamed requests only, so a copy with
    ``{"include_usage": True}`` there is used (the LLM passed in is not changed; a
    ``stream_options`` of its own is kept).
    """
    if not any(c.__module__.startswith("llama_index.llms.openai") for c in type(llm).__mro__):
        return llm
    extra = getattr(llm, "additional_kwargs", None)
    if not isinstance(extra, Mapping) or "stream_options" in extra:
        return llm
    return llm.model_copy(
        update={"additional_kwargs": {**extra, "stream_options": {"include_usage": True}}}
    )


def can_call_tools(llm: LLM) -> bool:
    """Whether a candidate takes tools natively (a function-calling LlamaIndex LLM)."""
    return isinstance(llm, FunctionCallingLLM) and bool(llm.metadata.is_function_calling_model)


def merged_metadata(llms: Mapping[str, LLM]) -> LLMMetadata:
    """Metadata that holds for every candidate, so any of them can serve any call.

    The smallest context window and output budget (ignoring unset, non-positive values), a chat
    interface (every LlamaIndex LLM has ``chat``), and function calling only if every candidate
    supports it.
    """
    metas = [llm.metadata for llm in llms.values()]
    windows = [m.context_window for m in metas if m.context_window > 0]
    outputs = [m.num_output for m in metas if m.num_output > 0]
    roles = {m.system_role for m in metas}
    return LLMMetadata(
        context_window=min(windows) if windows else DEFAULT_CONTEXT_WINDOW,
        num_output=min(outputs) if outputs else DEFAULT_NUM_OUTPUTS,
        is_chat_model=True,
        is_function_calling_model=all(can_call_tools(llm) for llm in llms.values()),
        model_name="metarouter:" + ",".join(llms),
        **({"system_role": roles.pop()} if len(roles) == 1 else {}),
    )
