from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from onepass.testing import gaussian_mixture

# Run by the SageMaker SDK's own venv (test_serve.py), never imported here: --doctest-modules would collect it.
collect_ignore = ["sdk_client.py"]


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


# `train` without --device runs on this device: the CPU (whose runs are bit for bit reproducible, which many tests
# assert), also on a machine with a GPU. ONEPASS_TEST_DEVICE=cuda runs the whole suite there instead, to explore;
# tests/test_cuda.py holds the GPU's own checks.
TEST_DEVICE = os.environ.get("ONEPASS_TEST_DEVICE", "cpu")


@pytest.fixture(autouse=True)
def _test_device(monkeypatch):
    """In-process runs with device "auto" (the default) take TEST_DEVICE too."""
    train_module = importlib.import_module("onepass.train")  # the module: `onepass.train` names the function
    resolve = train_module.resolve_device
    monkeypatch.setattr(train_module, "resolve_device",
                        lambda device: resolve(TEST_DEVICE if (device or "auto").lower() == "auto" else device))


def run_cli(*args: str, stdin=None, check: bool = False, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """Run `python -m onepass ARGS` in a subprocess, as a user would from a shell."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    named = any(str(a) == "--device" or str(a).startswith("--device=") for a in args)
    if args and args[0] == "train" and not named:
        args = (*args, "--device", TEST_DEVICE)
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


def record_class():
    """SageMaker's RecordIO `Record` protobuf message class (record.proto, package aialgs.data), built with the
    protobuf package (a test dependency only), to check onepass's bytes against the real parser."""
    from google.protobuf import descriptor_pb2 as pb
    from google.protobuf import descriptor_pool, message_factory
    F = pb.FieldDescriptorProto
    fd = pb.FileDescriptorProto(name="record.proto", package="aialgs.data", syntax="proto2")
    packed = pb.FieldOptions(packed=True)
    for name, t in (("Float32Tensor", F.TYPE_FLOAT), ("Float64Tensor", F.TYPE_DOUBLE), ("Int32Tensor", F.TYPE_INT32)):
        m = fd.message_type.add(name=name)
        for field, number, ft in (("values", 1, t), ("keys", 2, F.TYPE_UINT64), ("shape", 3, F.TYPE_UINT64)):
            m.field.add(name=field, number=number, type=ft, label=F.LABEL_REPEATED, options=packed)
    v = fd.message_type.add(name="Value")
    v.oneof_decl.add(name="value")
    for name, number, t in (("float32_tensor", 2, "Float32Tensor"), ("float64_tensor", 3, "Float64Tensor"),
                            ("int32_tensor", 7, "Int32Tensor")):
        v.field.add(name=name, number=number, type=F.TYPE_MESSAGE, type_name=".aialgs.data." + t,
                    label=F.LABEL_OPTIONAL, oneof_index=0)
    r = fd.message_type.add(name="Record")
    for name, number in (("features", 1), ("label", 2)):
        e = r.nested_type.add(name=name.capitalize() + "Entry", options=pb.MessageOptions(map_entry=True))
        e.field.add(name="key", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
        e.field.add(name="value", number=2, type=F.TYPE_MESSAGE, type_name=".aialgs.data.Value", label=F.LABEL_OPTIONAL)
        r.field.add(name=name, number=number, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                    type_name=f".aialgs.data.Record.{name.capitalize()}Entry")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    Record = message_factory.GetMessageClass(pool.FindMessageTypeByName("aialgs.data.Record"))
    return Record
