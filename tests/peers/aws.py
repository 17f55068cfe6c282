"""moto's server as the EC2 and CloudWatch endpoint: real HTTP, a test double of AWS.

It is the best stand-in for AWS that runs here (PEERS.md); it answers any credentials, so
the tests prove signing against SeaweedFS instead, and here only that our driver speaks the
real wire protocol through boto3.
"""

from __future__ import annotations

import logging
from typing import Any

import boto3
import httpx
from moto.server import ThreadedMotoServer

REGION = "eu-west-1"
KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


class Moto:
    def __init__(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.url = ""

    def start(self) -> Moto:
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        self.server.stop()

    def reset(self) -> None:
        httpx.post(f"{self.url}/moto-api/reset").raise_for_status()

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.url, region_name=REGION, **KEYS)

    def config(self, **extra: object) -> dict[str, object]:
        return {
            "kind": "ec2",
            "endpoint_url": self.url,
            "region": REGION,
            "access_key_id": KEYS["aws_access_key_id"],
            "secret_access_key": KEYS["aws_secret_access_key"],
            **extra,
        }
