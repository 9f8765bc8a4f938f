"""How a worker turns a request into a generation job: template, token budget, 413, resume."""

from __future__ import annotations

import pytest

from vicuna_ops import template
from vicuna_ops.serve.backends import StubBackend
from vicuna_ops.serve.protocol import ApiError, WorkerChatRequest, WorkerCompletionRequest
from vicuna_ops.serve.worker import _plan

STUB = StubBackend(tokens=10, rate=0, context_length=100)


def _chat(**kw):
    return WorkerChatRequest.model_validate(
        {"model": "stub", "messages": [{"role": "user", "content": "hello there"}], **kw})


def test_chat_uses_the_vicuna_template():
    job = _plan(_chat(), True, STUB)
    system, turns = template.parse_turns([{"role": "user", "content": "hello there"}])
    assert job.prompt == template.render_prompt(system, turns)
    assert job.prompt.endswith("USER: hello there ASSISTANT:")
    assert job.prompt_tokens == STUB.count_tokens(job.prompt)
    assert job.params.max_tokens == 100 - job.prompt_tokens  # no limit: what fits


def test_a_system_message_replaces_the_default():
    job = _plan(WorkerChatRequest.model_validate({"model": "stub", "messages": [
        {"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"}]}),
        True, STUB)
    assert job.prompt.startswith("Be terse. USER: hi")


def test_the_conversation_must_end_with_the_user():
    request = WorkerChatRequest.model_validate({"model": "stub", "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})
    with pytest.raises(ApiError) as caught:
        _plan(request, True, STUB)
    assert (caught.value.status, caught.value.param) == (422, "messages")


def test_a_prompt_over_the_context_is_413():
    request = WorkerCompletionRequest.model_validate({"model": "stub", "prompt": "w " * 100})
    with pytest.raises(ApiError) as caught:
        _plan(request, False, STUB)
    assert caught.value.status == 413
    assert "100 tokens" in caught.value.message


def test_resume_continues_the_budget_where_it_stopped():
    request = WorkerCompletionRequest.model_validate(
        {"model": "stub", "prompt": "a b", "max_tokens": 5,
         "vops_resume": {"text": " t0 t1 t2"}})
    job = _plan(request, False, STUB)
    assert job.prompt == "a b t0 t1 t2"
    assert (job.prompt_tokens, job.resumed_tokens) == (2, 3)
    assert job.params.max_tokens == 2
    assert job.params.resumed_tokens == 3


def test_a_resume_past_the_limit_generates_nothing():
    request = WorkerCompletionRequest.model_validate(
        {"model": "stub", "prompt": "a", "max_tokens": 2, "vops_resume": {"text": " t0 t1 t2"}})
    assert _plan(request, False, STUB).params.max_tokens == 0
