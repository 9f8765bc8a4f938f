"""The error handlers the controller and the workers share: OpenAI's error shape for every
failure, a bug included (logged, answered 500, the server goes on)."""

from __future__ import annotations

import logging

import fastapi
from starlette.testclient import TestClient

from vicuna_ops.serve.error_handlers import install_error_handlers
from vicuna_ops.serve.protocol import ApiError


def make_client() -> TestClient:
    app = fastapi.FastAPI()
    install_error_handlers(app, logging.getLogger("vops.test.errors"))

    @app.get("/teapot")
    async def teapot() -> None:
        raise ApiError(418, "short and stout", code="teapot")

    @app.get("/bug")
    async def bug() -> None:
        raise ZeroDivisionError("oops")

    @app.get("/ok")
    async def ok() -> dict:
        return {"ok": True}

    return TestClient(app, raise_server_exceptions=False)


def test_api_error_renders_its_body():
    reply = make_client().get("/teapot")
    assert reply.status_code == 418
    assert reply.json() == {"error": {"message": "short and stout", "type":
                                      "invalid_request_error", "param": None, "code": "teapot"}}


def test_unknown_route_and_method_answer_in_openai_shape():
    client = make_client()
    missing, wrong_method = client.get("/nowhere"), client.post("/ok")
    assert missing.status_code == 404 and missing.json()["error"]["message"] == "Not Found"
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()


def test_a_bug_is_logged_and_answered_as_500(caplog):
    client = make_client()
    with caplog.at_level(logging.ERROR, logger="vops.test.errors"):
        reply = client.get("/bug")
    assert reply.status_code == 500
    assert reply.json()["error"] == {"message": "internal error: ZeroDivisionError",
                                     "type": "server_error", "param": None, "code": None}
    assert "unhandled error on /bug" in caplog.text and "ZeroDivisionError" in caplog.text
    assert client.get("/ok").json() == {"ok": True}  # and the app goes on serving
