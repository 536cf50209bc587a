"""The one routing-text rule (``metarouter.text``), which both adapters use."""

from __future__ import annotations

from metarouter.text import Turn, question_from_variables, routing_text


def test_the_last_user_message_is_routed_on_not_the_system_prompt_or_earlier_turns():
    turns = [
        Turn("system", "Answer with the retrieved context: capybaras graze on grasses."),
        Turn("user", "Tell me about capybaras."),
        Turn("assistant", "Capybaras are large rodents."),
        Turn("user", "  What do they eat?  "),
    ]
    assert routing_text(turns) == "What do they eat?"


def test_tool_results_and_answers_do_not_change_the_routing_text_of_a_tool_loop():
    asked = [Turn("user", "Weather in Paris?")]
    loop = [*asked, Turn("assistant", ""), Turn("tool", "It is sunny in Paris.")]
    assert routing_text(loop) == routing_text(asked) == "Weather in Paris?"


def test_a_question_the_framework_names_wins_over_the_message_holding_the_context():
    rag = [Turn("user", "Context: a long retrieved passage.\nQuery: What do capybaras eat?")]
    assert routing_text(rag, question="What do capybaras eat?") == "What do capybaras eat?"
    assert routing_text(rag, question="   ") == rag[0].text  # a blank question is no question


def test_without_user_text_the_rule_falls_back_in_order():
    image_only = [Turn("user", "Describe it."), Turn("user", "")]
    assert routing_text(image_only) == "Describe it."
    assert routing_text([Turn("system", "Only a system prompt.")]) == "Only a system prompt."
    assert routing_text([]) == ""


def test_the_question_variables_of_prompt_templates():
    assert question_from_variables({"context_str": "...", "query_str": "Why?"}) == "Why?"
    assert question_from_variables({"question": "How?", "chat_history": "..."}) == "How?"
    assert question_from_variables({"query": "What?"}) == "What?"
    assert question_from_variables({"context_str": "...", "query_str": ""}) is None
    assert question_from_variables({"topic": "cats"}) is None
