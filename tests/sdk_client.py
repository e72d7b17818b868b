"""The SageMaker Python SDK v2's side of tests/test_serve.py, run with .venv-sdk's Python (the SDK's pins conflict
with the project's): its `Predictor` with each serializer and deserializer, through a boto3 sagemaker-runtime client
pointed at local onepass servers with dummy credentials. Writes {port: {case: what the deserializer returned}} as
JSON to OUT (the SDK logs its config look-ups on standard output). One process for all: importing the SDK takes
seconds.

    python tests/sdk_client.py RECORDS.npy OUT.json PORT...
"""

import json
import os
import sys

import boto3
import numpy as np

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
from sagemaker.deserializers import CSVDeserializer, JSONDeserializer, JSONLinesDeserializer  # noqa: E402
from sagemaker.predictor import Predictor  # noqa: E402
from sagemaker.serializers import CSVSerializer, JSONLinesSerializer, JSONSerializer, NumpySerializer  # noqa: E402
from sagemaker.session import Session  # noqa: E402


def ask(port: int, x: np.ndarray) -> dict:
    boto = boto3.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
    runtime = boto.client("sagemaker-runtime", endpoint_url=f"http://127.0.0.1:{port}")
    session = Session(boto_session=boto, sagemaker_runtime_client=runtime)
    cases = {
        "csv->json": (CSVSerializer(), JSONDeserializer(), x),
        "csv->csv": (CSVSerializer(), CSVDeserializer(), x),
        "json-array->json": (JSONSerializer(), JSONDeserializer(), x),
        "json-instances->json": (JSONSerializer(), JSONDeserializer(),
                                 {"instances": [{"features": r.tolist()} for r in x]}),
        "npy->json": (NumpySerializer(), JSONDeserializer(), x),
        "npy-one-record->json": (NumpySerializer(), JSONDeserializer(), x[0]),
        "jsonlines->json": (JSONLinesSerializer(), JSONDeserializer(), [{"features": r.tolist()} for r in x]),
        "csv->jsonlines": (CSVSerializer(), JSONLinesDeserializer(), x),
    }
    out = {}
    for name, (serializer, deserializer, data) in cases.items():
        predictor = Predictor("onepass", sagemaker_session=session, serializer=serializer, deserializer=deserializer)
        out[name] = predictor.predict(data)
    return out


def main() -> None:
    x, ports = np.load(sys.argv[1]), sys.argv[3:]
    with open(sys.argv[2], "w") as f:
        json.dump({port: ask(int(port), x) for port in ports}, f)


if __name__ == "__main__":
    main()
