"""Lazy imports: the collector is paused only for the import, and the extra is named."""

from __future__ import annotations

import gc
import sys

import pytest

from vicuna_ops import adaptors
from vicuna_ops.errors import UserError


def _forget(name: str) -> None:
    sys.modules.pop(name, None)


@pytest.mark.parametrize("enabled_before", [True, False])
def test_import_restores_the_collector_state(enabled_before):
    _forget("colorsys")  # a small stdlib module that nothing here keeps loaded
    (gc.enable if enabled_before else gc.disable)()
    try:
        module = adaptors.require("colorsys")
        assert module.__name__ == "colorsys"
        assert gc.isenabled() is enabled_before
    finally:
        gc.enable()


def test_collector_is_off_while_the_module_loads(tmp_path, monkeypatch):
    (tmp_path / "vops_probe_module.py").write_text("import gc\nSEEN = gc.isenabled()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    _forget("vops_probe_module")
    assert adaptors.require("vops_probe_module").SEEN is False
    assert gc.isenabled()


def test_missing_module_names_its_extra():
    with pytest.raises(UserError) as info:
        adaptors.require("matplotlib_not_installed_anywhere")
    assert "pip install 'vicuna-ops[matplotlib_not_installed_anywhere]'" in info.value.one_line()
    assert gc.isenabled()
