"""The process settings the CLI applies for streaming runs (see onepass/_process.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from onepass._process import tune_allocator


def _policy(env_value: str | None) -> str:
    code = "import os, onepass; print(os.environ['OMP_WAIT_POLICY'])"
    env = {"PATH": "/usr/bin:/bin"} | ({"OMP_WAIT_POLICY": env_value} if env_value else {})
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_openmp_workers_wait_passively_unless_the_user_says_otherwise():
    assert _policy(None) == "PASSIVE"
    assert _policy("ACTIVE") == "ACTIVE"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_allocator_tuning_takes_effect_on_glibc():
    assert tune_allocator() is True
