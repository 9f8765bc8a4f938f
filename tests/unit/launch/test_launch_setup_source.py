"""How a node installs vicuna-ops: release vs checkout, and the setup script itself (run with
bash against a recording ``uv``), which must skip work a node has already done."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from vicuna_ops import __version__
from vicuna_ops.errors import UserError
from vicuna_ops.launch import setup_source
from vicuna_ops.launch.setup_source import node_install, setup_script

FAKE_UV = """#!/bin/bash
# Records each call; `venv` makes a python, `pip install` logs the requirement.
echo "$*" >> "$HOME/uv.log"
if [ "$1" = venv ]; then mkdir -p "${@: -1}/bin" && touch "${@: -1}/bin/python" \
  && chmod +x "${@: -1}/bin/python"; fi
"""


def test_checkout_install_syncs_the_source_and_hashes_it():
    install = node_install()
    assert install.mode == "checkout"  # the tests run from the repository
    root = Path(setup_source.__file__).resolve().parents[2]
    assert install.workdir == str(root)
    assert install.requirement == "~/sky_workdir[train,s3,gcs]"
    assert install.install_id.startswith(f"{__version__}+src.")
    assert install.envs() == {"VOPS_INSTALL": install.requirement,
                              "VOPS_INSTALL_ID": install.install_id}


def test_the_source_hash_follows_the_package_files(tmp_path):
    root = tmp_path / "repo"
    (root / "vicuna_ops").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "vicuna-ops"\n')
    (root / "vicuna_ops" / "a.py").write_text("x = 1\n")
    first = setup_source.source_fingerprint(root)
    (root / "vicuna_ops" / "__pycache__").mkdir()
    (root / "vicuna_ops" / "__pycache__" / "a.pyc").write_bytes(b"junk")
    assert setup_source.source_fingerprint(root) == first
    (root / "vicuna_ops" / "a.py").write_text("x = 2\n")
    assert setup_source.source_fingerprint(root) != first


def test_release_install_and_forcing(monkeypatch):
    monkeypatch.setenv("VOPS_NODE_INSTALL", "index")
    install = node_install(("serve", "s3"))
    assert install.mode == "index" and install.workdir is None
    assert install.requirement == f"vicuna-ops[serve,s3]=={__version__}"
    monkeypatch.setattr(setup_source, "checkout_root", lambda: None)
    monkeypatch.delenv("VOPS_NODE_INSTALL")
    assert node_install().mode == "index"
    monkeypatch.setenv("VOPS_NODE_INSTALL", "checkout")
    with pytest.raises(UserError, match="not running from a source checkout"):
        node_install()
    monkeypatch.setenv("VOPS_NODE_INSTALL", "wheel")
    with pytest.raises(UserError, match="VOPS_NODE_INSTALL"):
        node_install()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_setup_installs_once_per_install_id(tmp_path):
    home = tmp_path / "node-home"
    (home / ".local" / "bin").mkdir(parents=True)
    uv = home / ".local" / "bin" / "uv"
    uv.write_text(FAKE_UV)
    uv.chmod(0o755)
    script = tmp_path / "setup.sh"
    script.write_text(setup_script())

    def run(install_id: str) -> subprocess.CompletedProcess:
        env = {"PATH": os.environ["PATH"], "HOME": str(home),
               "VOPS_INSTALL": "~/sky_workdir[train,s3,gcs]", "VOPS_INSTALL_ID": install_id}
        return subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True,
                              timeout=30)

    first = run("0.1.0+src.aaa")
    assert first.returncode == 0, first.stderr
    log = (home / "uv.log").read_text().splitlines()
    assert log[0].startswith("venv --seed")
    # the leading ~ was expanded on the node, not passed literally
    assert log[1] == f"pip install --python {home}/vops-venv/bin/python " \
                     f"{home}/sky_workdir[train,s3,gcs]"

    again = run("0.1.0+src.aaa")  # a recovery on the same node: nothing to do
    assert again.returncode == 0 and "skipping setup" in again.stdout
    assert len((home / "uv.log").read_text().splitlines()) == 2

    changed = run("0.1.0+src.bbb")  # new source: reinstall into the same venv
    assert changed.returncode == 0
    log = (home / "uv.log").read_text().splitlines()
    assert len(log) == 3 and log[2].startswith("pip install")
    assert (home / "vops-venv" / ".vops-install-id").read_text().strip() == "0.1.0+src.bbb"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_setup_fails_loudly_when_the_install_fails(tmp_path):
    home = tmp_path / "node-home"
    (home / ".local" / "bin").mkdir(parents=True)
    uv = home / ".local" / "bin" / "uv"
    uv.write_text("#!/bin/bash\nif [ \"$1\" = pip ]; then exit 3; fi\n"
                  "mkdir -p \"${@: -1}/bin\"; touch \"${@: -1}/bin/python\"\n")
    uv.chmod(0o755)
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "VOPS_INSTALL": "x",
           "VOPS_INSTALL_ID": "id1"}
    result = subprocess.run(["bash", "-c", setup_script()], env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 3
    assert not (home / "vops-venv" / ".vops-install-id").exists()  # retried next time
