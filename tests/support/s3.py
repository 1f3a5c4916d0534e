"""A real S3 API on loopback for the object-storage tests: moto's standalone server
(ThreadedMotoServer) in this process, on 127.0.0.1, no Docker. It speaks the S3 REST
protocol, so the clients under test (pyarrow's S3FileSystem, boto3, Airflow's S3 hook) talk
to it as they would to AWS or an S3-compatible store; only the endpoint differs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from tests.support.ports import free_port

ACCESS_KEY = "loopback-access-key"
SECRET_KEY = "loopback-secret-key"
REGION = "us-east-1"


@dataclass
class LoopbackS3:
    port: int = field(default_factory=free_port)
    _server: object = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "LoopbackS3":
        import logging

        from moto.server import ThreadedMotoServer

        # werkzeug logs every request at INFO: thousands of lines for one dataset.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def client(self):
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY, region_name=REGION,
        )

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def multipart_uploads(self, bucket: str, prefix: str = "") -> list[str]:
        """Keys of the multipart uploads begun and neither completed nor aborted (invisible
        as objects, but stored, and billed, until aborted)."""
        pages = self.client().get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(upload["Key"] for page in pages for upload in page.get("Uploads", []))

    def aws_env(self) -> dict[str, str]:
        """The standard AWS environment pointing at this server (what an SDK reads)."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
        }

    def airflow_connection(self) -> str:
        """This server as an Airflow connection of the Amazon provider (JSON form, for an
        AIRFLOW_CONN_<ID> variable)."""
        return json.dumps({
            "conn_type": "aws", "login": ACCESS_KEY, "password": SECRET_KEY,
            "extra": {"endpoint_url": self.endpoint, "region_name": REGION},
        })
