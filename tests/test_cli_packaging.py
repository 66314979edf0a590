"""The ``parkwatch`` entry point as installed: ``--version``, and what loading it costs.

Run in subprocesses, so what other tests imported cannot hide an import the CLI makes.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import subprocess
import sys

import pytest

_HEAVY = ("grafana_foundation_sdk", "grafana_client")

# Build the whole parser and parse ``run`` (without running it), as ``parkwatch run`` does first.
_PROBE = f"""
import json, sys
from gateway.tools import cli
args = cli._parser().parse_args(["run"])
assert args.handler is cli._cmd_run
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {_HEAVY!r})))
"""


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=60,
                          check=False)


def test_run_does_not_import_grafana_libraries() -> None:
    done = _python("-c", _PROBE)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_run_help_does_not_import_grafana_libraries() -> None:
    probe = ("import sys\n"
             "sys.argv = ['parkwatch', 'run', '--help']\n"
             "try:\n"
             "    from gateway.tools.cli import main; main()\n"
             "except SystemExit:\n"
             "    pass\n"
             f"print([m for m in sys.modules if m.split('.')[0] in {_HEAVY!r}])\n")
    done = _python("-c", probe)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("[]"), done.stdout


@pytest.mark.parametrize("heavy", _HEAVY)
def test_grafana_commands_still_reach_their_library(heavy: str) -> None:
    """The lazy imports are still there to be made: a push loads grafana-client when it talks
    to Grafana, an export the foundation SDK when it builds dashboards."""
    probe = ("import sys\n"
             "from gateway.grafana import export, push\n"
             "push.GrafanaSession('http://127.0.0.1:9', 'token').close()\n"
             "export.rendered()\n"
             f"assert {heavy!r} in sys.modules\n")
    done = _python("-c", probe)
    assert done.returncode == 0, done.stderr


def test_version() -> None:
    done = _python("-m", "gateway.tools.cli", "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"parkwatch {importlib.metadata.version('parkwatch')}"



def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return {name: sub for action in parser._actions
            if isinstance(action, argparse._SubParsersAction)
            for name, sub in action.choices.items()}


def test_docstring_lists_every_command() -> None:
    """The module docstring (``parkwatch --help``) names each command and each action."""
    from gateway.tools import cli

    assert cli.__doc__ is not None
    listed = dict([*line.split(), ""][:2] for line in cli.__doc__.splitlines()
                  if line.startswith("  "))
    commands = _subcommands(cli._parser())
    assert sorted(listed) == sorted([*commands, "--version"])
    for name, command in commands.items():
        actions = list(_subcommands(command))
        if actions:
            assert listed[name].split("|") == actions, name
