"""Real LlamaIndex pipelines with ``Settings.llm`` set to the router: a query engine over a
``VectorStoreIndex`` built with a local embedding model, a chat engine with memory, and agents
that call a tool. All offline."""

from __future__ import annotations

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.agent.workflow import FunctionAgent, ReActAgent, ToolCallResult
from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.memory import ChatMemoryBuffer
from llama_index.core.tools import FunctionTool
from llamaindex_tooling import RECORDED_ARMS, restored_settings

from llama_index_metarouter import MiniLMEmbedding

DOCS = [
    "Capybaras are the largest living rodents. They graze on grasses and aquatic plants.",
    "The Rust borrow checker enforces that references never outlive the data they point to.",
    "Sourdough bread rises thanks to wild yeast and lactic acid bacteria in the starter.",
    "Jupiter's Great Red Spot is a storm larger than Earth that has raged for centuries.",
]


@pytest.fixture
def rag(settings, embedder, make_router, recorded_candidates):
    """``Settings`` with the router as LLM and the router's own embedder, plus an index."""
    router = make_router(recorded_candidates())
    settings.llm = router
    settings.embed_model = MiniLMEmbedding(embedder)
    index = VectorStoreIndex.from_documents([Document(text=t) for t in DOCS])
    return router, index


def test_query_engine_retrieves_locally_and_answers_through_the_router(rag):
    router, index = rag
    engine = index.as_query_engine(similarity_top_k=1)
    with router.scope(user_id="alice") as scope:
        response = engine.query("What do capybaras eat?")
    assert "Capybaras" in response.source_nodes[0].node.get_content()
    (call,) = scope.calls
    assert call.user_id == "alice" and call.model in RECORDED_ARMS
    assert str(response) == call.text and call.cost_usd > 0


def test_streaming_query_engine_streams_through_the_router(rag):
    router, index = rag
    engine = index.as_query_engine(similarity_top_k=1, streaming=True)
    with router.scope(user_id="alice") as scope:
        response = engine.query("Why does sourdough rise?")
        text = "".join(response.response_gen)
    assert "Sourdough" in response.source_nodes[0].node.get_content()
    assert text and text == scope.last.text
    assert scope.last.cost_usd > 0, "booked once the stream is exhausted"


async def test_async_query_engine(rag):
    router, index = rag
    engine = index.as_query_engine(similarity_top_k=1)
    with router.scope(user_id="bob") as scope:
        response = await engine.aquery("How big is the Great Red Spot?")
    assert "Jupiter" in response.source_nodes[0].node.get_content()
    assert str(response) == scope.last.text and scope.last.user_id == "bob"


def test_chat_engine_keeps_the_conversation_in_memory(rag):
    router, index = rag
    engine = index.as_chat_engine(
        chat_mode="condense_plus_context", memory=ChatMemoryBuffer.from_defaults(token_limit=4000)
    )
    with router.scope(user_id="alice") as scope:
        first = engine.chat("Tell me about capybaras.")
        second = engine.chat("And what about the borrow checker?")
    assert str(first) and str(second)
    answered_by = scope.last.model
    conversation = router.candidates[answered_by].conversations[-1]
    texts = [m.content or "" for m in conversation]
    assert any("Tell me about capybaras." in t for t in texts), "first question kept in memory"
    assert any(str(first) in t for t in texts if t), "first answer kept in memory"
    assert "borrow checker" in texts[-1]
    assert {c.user_id for c in scope.calls} == {"alice"}


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    multiply.calls += 1  # type: ignore[attr-defined]
    return a * b


multiply.calls = 0  # type: ignore[attr-defined]


def function_caller(name: str) -> MockFunctionCallingLLM:
    """Calls the ``multiply`` tool with 6 and 7, then reports the tool's result."""

    def respond(messages, **kwargs):
        results = [m for m in messages if m.role == MessageRole.TOOL]
        if results:
            return ChatMessage(role="assistant", content=f"6 x 7 = {results[-1].content} ({name})")
        return ChatMessage(
            role="assistant",
            blocks=[
                ToolCallBlock(
                    tool_call_id=f"{name}-1", tool_name="multiply", tool_kwargs={"a": 6, "b": 7}
                )
            ],
        )

    return MockFunctionCallingLLM(response_generator=respond)


@pytest.mark.parametrize("streaming", [True, False])
async def test_function_agent_calls_a_tool_through_the_router(settings, make_router, streaming):
    router = make_router(
        {
            "gemma-2-9b-it": function_caller("gemma-2-9b-it"),
            "qwen2.5-7b-instruct": function_caller("qwen2.5-7b-instruct"),
        }
    )
    settings.llm = router
    multiply.calls = 0  # type: ignore[attr-defined]
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(fn=multiply)], streaming=streaming)
    with router.scope(user_id="alice") as scope:
        handler = agent.run(user_msg="What is 6 times 7?")
        tool_results = [
            ev async for ev in handler.stream_events() if isinstance(ev, ToolCallResult)
        ]
        result = await handler
    assert multiply.calls == 1  # type: ignore[attr-defined]
    assert [r.tool_output.content for r in tool_results] == ["42"]
    first, second = scope.calls
    assert "42" in str(result.response) and second.model in str(result.response)
    assert first.reason == "routed"
    assert (second.reason, second.model) == ("tool_loop", first.model)


async def test_react_agent_calls_a_tool_through_the_router(settings, make_router):
    def react(messages, **kwargs):
        last = messages[-1].content or ""
        if "Observation" in last or any("Observation:" in (m.content or "") for m in messages[1:]):
            return ChatMessage(role="assistant", content="Thought: I can answer.\nAnswer: 42")
        return ChatMessage(
            role="assistant",
            content='Thought: I need to multiply.\nAction: multiply\nAction Input: {"a": 6, "b": 7}',
        )

    router = make_router(
        {
            "gemma-2-9b-it": MockFunctionCallingLLM(response_generator=react),
            "qwen2.5-7b-instruct": MockFunctionCallingLLM(response_generator=react),
        }
    )
    settings.llm = router
    multiply.calls = 0  # type: ignore[attr-defined]
    agent = ReActAgent(tools=[FunctionTool.from_defaults(fn=multiply)])
    with router.scope(user_id="alice") as scope:
        result = await agent.run(user_msg="What is 6 times 7?")
    assert multiply.calls == 1  # type: ignore[attr-defined]
    assert "42" in str(result.response)
    assert len(scope.calls) == 2 and all(c.user_id == "alice" for c in scope.calls)


def test_settings_set_by_a_test_are_restored_after_it(make_router, mock_candidates):
    """Self-contained (no reliance on test order): what the ``settings`` fixture does."""
    from llama_index.core import Settings

    from llama_index_metarouter import MetaRouterLLM

    before = Settings._llm
    with restored_settings() as settings:
        settings.llm = make_router(mock_candidates())
        assert isinstance(Settings._llm, MetaRouterLLM)
    assert Settings._llm is before and not isinstance(Settings._llm, MetaRouterLLM)


# -- what a pipeline's call is routed on ---------------------------------------------------------
QUESTIONS = [
    "What do capybaras eat?",
    "How large are capybaras compared with other rodents?",
    "What does the Rust borrow checker enforce?",
    "Why can a reference not outlive its data in Rust?",
    "Why does sourdough bread rise?",
    "What lives in a sourdough starter?",
    "What is Jupiter's Great Red Spot?",
    "How long has the Great Red Spot existed?",
    "Is the Great Red Spot larger than Earth?",
    "Which animal is the largest living rodent?",
]


def test_a_query_engine_is_routed_on_the_question_not_the_retrieved_context(rag):
    from metarouter.store.records import query_hash

    router, index = rag
    engine = index.as_query_engine(similarity_top_k=2)
    store = router.service.store
    for question in QUESTIONS:
        with router.scope(user_id="alice") as scope:
            engine.query(question)
        (via_engine,) = scope.calls
        direct = router.complete(question, user_id="alice").additional_kwargs["metarouter"]
        # the same question, asked directly or through RAG, is one query to the router
        assert store.get_decision(via_engine.decision_id).query_hash == query_hash(question)
        assert store.get_decision(direct["decision_id"]).query_hash == query_hash(question)
        assert via_engine.scores == pytest.approx(direct["scores"])


def test_each_turn_of_a_chat_is_routed_on_its_own_question(rag):
    from metarouter.store.records import query_hash

    router, index = rag
    engine = index.as_chat_engine(chat_mode="context")  # retrieved context in the system prompt
    turns = ["Tell me about capybaras.", "What do they eat?"]
    with router.scope(user_id="alice") as scope:
        for turn in turns:
            engine.chat(turn)
    hashes = [router.service.store.get_decision(c.decision_id).query_hash for c in scope.calls]
    assert hashes == [query_hash(turn) for turn in turns]
