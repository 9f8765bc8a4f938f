"""The wire models: strict OpenAI request validation and the 422 that names the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from vicuna_ops.serve import protocol
from vicuna_ops.serve.protocol import (
    ChatCompletionRequest, CompletionRequest, WorkerChatRequest, WorkerInfo)


def _error(model, data) -> protocol.ApiError:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return protocol.validation_error(caught.value)


def test_a_minimal_chat_request_gets_openai_defaults():
    request = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert (request.temperature, request.top_p, request.stream, request.n) == (1.0, 1.0, False, 1)
    assert request.token_limit() is None
    assert not request.include_usage()


def test_max_completion_tokens_wins_over_max_tokens():
    request = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5,
         "max_completion_tokens": 9})
    assert request.token_limit() == 9


def test_content_parts_are_joined():
    message = protocol.ChatMessage.model_validate(
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]})
    assert message.text() == "ab"


@pytest.mark.parametrize("data, param", [
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "extra": 1}, "extra"),
    ({"model": "m", "messages": [{"role": "user", "content": 3}]}, "messages.0.content.str"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 3}, "temperature"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "top_p": 0}, "top_p"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": ["a"] * 5}, "stop"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": [""]}, "stop"),
    ({"model": "", "messages": [{"role": "user", "content": "x"}]}, "model"),
])
def test_bad_chat_fields_name_the_field(data, param):
    error = _error(ChatCompletionRequest, data)
    assert error.status == 422
    assert error.param == param
    assert error.message.startswith(param + ":")


def test_unknown_fields_say_so():
    error = _error(ChatCompletionRequest, {"model": "m", "messages": [], "foo": 1})
    assert "messages" in error.param or error.param == "foo"
    error = _error(ChatCompletionRequest,
                   {"model": "m", "messages": [{"role": "user", "content": "x"}], "foo": 1})
    assert error.message == "foo: unknown field"


def test_stop_is_normalised_to_a_list():
    request = CompletionRequest.model_validate({"model": "m", "prompt": "p", "stop": "\n"})
    assert request.stop_list() == ["\n"]
    assert request.token_limit() == 16  # OpenAI's completions default


def test_completion_prompt_batches_are_refused():
    assert CompletionRequest.model_validate({"model": "m", "prompt": ["one"]}).prompt_text() == "one"
    assert _error(CompletionRequest, {"model": "m", "prompt": ["a", "b"]}).param == "prompt"


def test_resume_is_for_workers_only():
    data = {"model": "m", "messages": [{"role": "user", "content": "x"}],
            "vops_resume": {"text": " t0"}}
    assert WorkerChatRequest.model_validate(data).vops_resume.text == " t0"
    assert _error(ChatCompletionRequest, data).param == "vops_resume"


def test_worker_info_checks_ids_urls_and_model_names():
    good = {"worker_id": "w-1", "url": "http://10.0.0.1:8001/", "models": ["vicuna-7b"]}
    assert WorkerInfo.model_validate(good).url == "http://10.0.0.1:8001"
    for field, value in (("worker_id", "../x"), ("url", "ftp://x"), ("url", "http://h/path"),
                         ("models", []), ("models", ["bad name"])):
        assert _error(WorkerInfo, {**good, field: value}).param.startswith(field)


def test_chunk_text_reads_chat_and_completion_chunks():
    chat = protocol.chat_chunk("r", "m", {"content": "hi"})
    completion = protocol.completion_chunk("r", "m", "yo")
    assert protocol.chunk_text(chat) == "hi"
    assert protocol.chunk_text(completion) == "yo"
    assert protocol.chunk_text(protocol.usage_chunk("r", "m", True, 1, 2)) == ""
    assert protocol.chunk_text(protocol.chat_chunk("r", "m", {"role": "assistant"})) == ""


def test_api_error_body_is_openai_shaped():
    body = protocol.ApiError(404, "nope", param="model", code="model_not_found").body()
    assert body == {"error": {"message": "nope", "type": "invalid_request_error",
                              "param": "model", "code": "model_not_found"}}
