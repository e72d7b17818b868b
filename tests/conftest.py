from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from onepass.testing import gaussian_mixture


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    session.config.stash[_EXIT] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """Leave at once once pytest is done, as the `onepass` command does (`onepass.cli.run`): the interpreter's
    teardown can race pyarrow's and torch's native thread pools and abort a run whose tests all passed."""
    if _EXIT in config.stash and not hasattr(sys, "_called_from_xdist"):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(config.stash[_EXIT])


_EXIT = pytest.StashKey[int]()


def run_cli(*args: str, stdin=None, check: bool = False, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """Run `python -m onepass ARGS` in a subprocess, as a user would from a shell."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "onepass", *args], stdin=stdin, capture_output=True, text=True,
                          timeout=timeout, env=env, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"onepass {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@pytest.fixture
def cli():
    return run_cli


def write_csv(path: Path, x: np.ndarray) -> Path:
    np.savetxt(path, x, delimiter=",", fmt="%.7g")
    return path


@pytest.fixture
def blobs_csv(tmp_path) -> Path:
    return write_csv(tmp_path / "blobs.csv", gaussian_mixture(3000, 0))
