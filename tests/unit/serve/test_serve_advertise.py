"""Where a hand-started worker listens and which address it gives the controller; and how
``vops serve --local --model`` given several times names its models."""

from __future__ import annotations

import socket

import psutil
import pytest

from vicuna_ops.errors import UserError
from vicuna_ops.serve import advertise
from vicuna_ops.serve.local import LocalPlan, LocalServing, ServedModel, parse_models
from vicuna_ops.serve.node import _worker_parser


def _own_ipv4() -> list[str]:
    return sorted({a.address for addrs in psutil.net_if_addrs().values() for a in addrs
                   if a.family == socket.AF_INET})


@pytest.mark.parametrize("url, host", [
    ("http://127.0.0.1:8000", "127.0.0.1"), ("http://localhost:8000", "127.0.0.1"),
    ("http://[::1]:8000", "127.0.0.1"), ("http://10.1.2.3:8000", "0.0.0.0"),
    ("https://controller.example.com", "0.0.0.0"), (None, "0.0.0.0"),
])
def test_the_default_listen_address_follows_the_controller(url, host):
    assert advertise.default_host(url) == host


def test_a_worker_advertises_its_address_on_the_route_to_the_controller(monkeypatch):
    monkeypatch.delenv("VOPS_PUBLIC_HOST", raising=False)
    addresses = _own_ipv4()
    assert "127.0.0.1" in addresses
    for address in addresses:  # a route to one of our own addresses leaves from it
        assert advertise.advertised_url("0.0.0.0", 8001, f"http://{address}:8000") \
            == f"http://{address}:8001"
    # loopback only for a controller on loopback
    assert advertise.advertised_url("0.0.0.0", 9, "http://localhost:8000") == "http://127.0.0.1:9"


def test_an_explicit_host_or_public_host_wins(monkeypatch):
    monkeypatch.setenv("VOPS_PUBLIC_HOST", "203.0.113.9")
    assert advertise.advertised_url("0.0.0.0", 8001, "http://127.0.0.1:8000") \
        == "http://203.0.113.9:8001"
    assert advertise.advertised_url("192.0.2.5", 8001, "http://127.0.0.1:8000") \
        == "http://192.0.2.5:8001"
    assert advertise.advertised_url("::1", 7, None) == "http://[::1]:7"


@pytest.mark.parametrize("url", ["controller:8000", "ftp://x", "http://", "http://h:99999"])
def test_a_malformed_url_is_a_user_error_naming_the_flag(url):
    with pytest.raises(UserError, match="--controller-url must be an http"):
        advertise.check_url("--controller-url", url)


def test_worker_help_documents_the_joining_flags():
    text = _worker_parser().format_help()
    for flag in ("--controller-url", "--advertise-url", "--host", "--model", "--drain-grace",
                 "VOPS_WORKER_TOKEN", "SIGTERM"):
        assert flag in text
    assert "--stub-tokens" not in text and "--signal-exit-code" not in text  # internal


def _folder(tmp_path, name):
    folder = tmp_path / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    return folder


def test_several_models_are_named_by_prefix_or_folder(tmp_path):
    a = _folder(tmp_path / "runs" / "alpha", "final")
    b = _folder(tmp_path, "beta-7b")
    served = parse_models([str(a), f"chat={b}"], model_name=None, backend="transformers")
    assert served == (ServedModel("alpha", str(a.resolve())), ServedModel("chat", str(b.resolve())))
    # the single-model form is unchanged: --model-name renames it
    assert parse_models([str(a)], model_name="mine", backend="transformers") \
        == (ServedModel("mine", str(a.resolve())),)
    assert parse_models(["s3://b/runs/r1/final"], model_name=None, backend="vllm") \
        == (ServedModel("r1", "s3://b/runs/r1/final"),)
    assert parse_models([], model_name=None, backend="stub") == (ServedModel("stub", None),)


def test_a_folder_whose_name_has_an_equals_sign_is_a_path(tmp_path):
    odd = _folder(tmp_path, "a=b")
    served = parse_models([str(odd)], model_name=None, backend="transformers")
    assert served == (ServedModel("a=b", str(odd.resolve())),)


@pytest.mark.parametrize("values, model_name, needle", [
    (["x=1", "y=2"], "n", "--model-name names a single --model"),
    (["a=/nowhere", "a=/elsewhere"], None, "both served as 'a'"),
    (["/nowhere/final"], None, "is not an HF model folder"),
    (["a="], None, "no model folder or bucket URI after '='"),
])
def test_mistakes_in_model_lists_are_user_errors(values, model_name, needle):
    backend = "stub" if "both served" in needle else "transformers"
    with pytest.raises(UserError, match=needle.replace("(", r"\(")):
        parse_models(values, model_name=model_name, backend=backend)


def test_each_model_gets_its_workers_and_the_controller_knows_them_all(tmp_path):
    plan = LocalPlan(model=None, backend="stub", workers=2, state_dir=tmp_path,
                     models=(ServedModel("alpha", None), ServedModel("beta", None)))
    serving = LocalServing(plan)
    try:
        names = [w.argv[w.argv.index("--model-name") + 1] for w in serving.workers]
        assert names == ["alpha", "alpha", "beta", "beta"]
        argv = serving.controller.argv
        assert [argv[i + 1] for i, a in enumerate(argv) if a == "--model-name"] \
            == ["alpha", "beta"]
        assert [w.role for w in serving.workers] == [f"worker-{i}" for i in range(4)]
    finally:
        serving.lifeline.close()
