"""`ndsnn info` reports versions, compiled kernels and devices."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from ndsnn.cli import main


def test_info_json(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["torch"] == torch.__version__
    assert "cpu" in info["devices"]
    assert info["kernels"] in ("prebuilt", "jit") or info["kernels"].startswith("none")


def test_info_as_module():
    result = subprocess.run([sys.executable, "-m", "ndsnn", "info"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "cpu kernels" in result.stdout and "torch" in result.stdout


def test_unknown_command_fails(capsys):
    try:
        main(["frobnicate"])
    except SystemExit as exit_:
        assert exit_.code == 2
    else:
        raise AssertionError("expected a usage error")
