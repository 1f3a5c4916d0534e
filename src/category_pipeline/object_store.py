"""Which filesystem a staging URI opens, and with which endpoint and credentials.

``s3://bucket/key`` gets a ``pyarrow.fs.S3FileSystem`` configured from, in this order:

- the Airflow connection named by ``$PIPELINE_STAGING_CONN_ID`` (conn type ``aws``: login and
  password are the key id and secret, extra ``endpoint_url``, ``region_name``, ``role_arn``),
  read through the Task SDK's ``Connection.get``: inside a task it asks the API server, outside
  Airflow (the laptop runner, the bench) it finds ``AIRFLOW_CONN_<ID>`` in the environment;
- otherwise the standard AWS environment: ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` for an
  S3-compatible store, ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, and the AWS SDK's default
  credential chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, web identity from
  ``AWS_ROLE_ARN`` + ``AWS_WEB_IDENTITY_TOKEN_FILE`` as IRSA sets them, instance metadata).

A connection without login/password also falls back to that chain for its keys, so on a
cluster with IRSA the connection only carries the endpoint and region.

One filesystem per settings (endpoint, region, credentials) per process: a task that reads and
writes many files builds it once. Other schemes (gs://, abfs://, hdfs://...) go to
``pyarrow.fs.FileSystem.from_uri`` unchanged, with that library's own credential lookup.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from pyarrow import fs

CONN_ID_ENV = "PIPELINE_STAGING_CONN_ID"

# The environment the AWS SDK's default chain reads: part of the cache key, so that a process
# whose environment changes (a test, a rotated key) does not keep a stale filesystem.
_SDK_CREDENTIAL_ENV = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
    "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE",
)

# What pyarrow's S3 errors say when the store, not the data, is the problem: every error from
# the AWS SDK is worded "AWS Error <TYPE> during <Operation> operation: ..." (arrow's
# s3_internal.h ErrorToStatus). A corrupt Parquet file never is.
_S3_ERROR_MARKER = "AWS Error "


class ObjectStoreConfigError(ValueError):
    """The staging store's settings are unusable (names the setting)."""


@dataclass(frozen=True)
class S3Settings:
    """Everything an S3 client of the staging store needs; ``None`` = the SDK's default."""

    endpoint: str | None = None  # host[:port] of an S3-compatible store
    scheme: str = "https"
    region: str | None = None
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    role_arn: str | None = None
    source: str = "the AWS environment"  # for error messages
    # Only for the cache key: the SDK chain's environment when no keys are given here.
    sdk_environment: tuple = field(default=(), repr=False)

    @property
    def endpoint_url(self) -> str | None:
        return f"{self.scheme}://{self.endpoint}" if self.endpoint else None

    def pyarrow_options(self) -> dict:
        options: dict = {"region": self.region, "scheme": self.scheme, "endpoint_override": self.endpoint,
                         # Each 10 MB part is uploaded before the writer goes on: pyarrow's
                         # background writes queue parts without a limit, so a writer faster
                         # than the network would hold the whole file in memory.
                         "background_writes": False}
        if self.access_key:
            options.update(access_key=self.access_key, secret_key=self.secret_key, session_token=self.session_token)
        elif self.role_arn:
            options["role_arn"] = self.role_arn
        return options

    def boto3_client(self):
        """A boto3 S3 client with the same settings (for what pyarrow cannot do: multipart
        uploads, bulk deletes). boto3's default chain covers the same environment."""
        import boto3

        session = boto3.session.Session(
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            aws_session_token=self.session_token, region_name=self.region,
        )
        if self.role_arn and not self.access_key:
            assumed = session.client("sts").assume_role(RoleArn=self.role_arn, RoleSessionName="staging-retention")
            credentials = assumed["Credentials"]
            session = boto3.session.Session(
                aws_access_key_id=credentials["AccessKeyId"], aws_secret_access_key=credentials["SecretAccessKey"],
                aws_session_token=credentials["SessionToken"], region_name=self.region,
            )
        return session.client("s3", endpoint_url=self.endpoint_url)


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> (``bucket``, ``a/b``)."""
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc:
        raise ObjectStoreConfigError(f"{uri!r} is not an s3://bucket/... URI")
    if parts.query:
        raise ObjectStoreConfigError(
            f"{uri!r}: query options are not supported in a staging URI; set the endpoint and region "
            f"through ${CONN_ID_ENV} or the AWS environment"
        )
    return parts.netloc, parts.path.strip("/")


def resolve(uri: str) -> tuple[fs.FileSystem, str]:
    """The filesystem of a URI with a scheme, and the path within it."""
    scheme = uri.split("://", 1)[0].lower()
    if scheme == "s3":
        bucket, key = split_s3_uri(uri)
        return s3_filesystem(s3_settings()), f"{bucket}/{key}".rstrip("/")
    if scheme == "file":
        return fs.LocalFileSystem(), urlsplit(uri).path
    return fs.FileSystem.from_uri(uri)


def s3_filesystem(settings: S3Settings) -> fs.S3FileSystem:
    return _s3_filesystem(settings)


@functools.lru_cache(maxsize=16)
def _s3_filesystem(settings: S3Settings) -> fs.S3FileSystem:
    return fs.S3FileSystem(**settings.pyarrow_options())


def s3_settings() -> S3Settings:
    """The staging store's settings from ``$PIPELINE_STAGING_CONN_ID`` or the AWS environment."""
    conn_id = os.environ.get(CONN_ID_ENV, "").strip()
    sdk_environment = tuple(os.environ.get(name) for name in _SDK_CREDENTIAL_ENV)
    if conn_id:
        # Keyed by the connection's variable too: a changed AIRFLOW_CONN_<ID> is read again.
        return _settings_from_connection(conn_id, os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}"), sdk_environment)
    return _settings_from_environment(
        os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
        os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
        sdk_environment,
    )


def clear_cache() -> None:
    """Forget the settings and filesystems built so far (tests; a rotated connection)."""
    _s3_filesystem.cache_clear()
    _settings_from_connection.cache_clear()


def _settings_from_environment(endpoint_url: str | None, region: str | None, sdk_environment: tuple) -> S3Settings:
    scheme, endpoint = _split_endpoint(endpoint_url, "AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL")
    # With an endpoint and no region, the SDK would sign for its default anyway: say it.
    return S3Settings(endpoint=endpoint, scheme=scheme, region=region or ("us-east-1" if endpoint else None),
                      sdk_environment=sdk_environment)


@functools.lru_cache(maxsize=8)
def _settings_from_connection(conn_id: str, conn_variable: str | None, sdk_environment: tuple) -> S3Settings:
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        connection = Connection.get(conn_id)
    except AirflowNotFoundException as exc:
        raise ObjectStoreConfigError(
            f"{CONN_ID_ENV}={conn_id}: there is no Airflow connection {conn_id!r} "
            f"(set AIRFLOW_CONN_{conn_id.upper()} or create it)"
        ) from exc
    where = f"Airflow connection {conn_id!r} ({CONN_ID_ENV})"
    if connection.conn_type not in ("aws", "s3"):
        raise ObjectStoreConfigError(f"{where} has conn_type {connection.conn_type!r}; staging on S3 needs 'aws'")
    extra = connection.extra_dejson
    if not isinstance(extra, dict):
        raise ObjectStoreConfigError(f"{where}: its extra is not a JSON object")
    endpoint_url = extra.get("endpoint_url") or extra.get("service_config", {}).get("s3", {}).get("endpoint_url")
    scheme, endpoint = _split_endpoint(endpoint_url, f"{where} extra endpoint_url")
    if bool(connection.login) != bool(connection.password):
        raise ObjectStoreConfigError(f"{where} has only one of login (key id) and password (secret)")
    if connection.login and extra.get("role_arn"):
        # pyarrow assumes a role with the SDK chain's credentials only, not with given keys.
        raise ObjectStoreConfigError(f"{where} has both keys and role_arn: keep one")
    region = extra.get("region_name") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return S3Settings(
        endpoint=endpoint, scheme=scheme, region=region or ("us-east-1" if endpoint else None),
        access_key=connection.login or None, secret_key=connection.password or None,
        session_token=extra.get("aws_session_token") or None, role_arn=extra.get("role_arn") or None,
        source=where, sdk_environment=sdk_environment,
    )


def _split_endpoint(endpoint_url: str | None, setting: str) -> tuple[str, str | None]:
    """``http://host:9000`` -> (``http``, ``host:9000``); no endpoint -> AWS over https."""
    if not endpoint_url:
        return "https", None
    parts = urlsplit(endpoint_url if "://" in endpoint_url else f"https://{endpoint_url}")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ObjectStoreConfigError(f"{setting}: {endpoint_url!r} is not an http(s)://host[:port] endpoint")
    return parts.scheme, parts.netloc


def is_store_unavailable(exc: BaseException) -> bool:
    """An error talking to the object store (connection refused, timeout, 5xx, throttling,
    access denied...), as opposed to unreadable data: worth a retry, never a data error."""
    return isinstance(exc, OSError) and _S3_ERROR_MARKER in str(exc)


# -- retention on the store itself ----------------------------------------------------------

def lifecycle_configuration(prefix: str, expire_after_days: int, abort_uploads_after_days: int = 1) -> dict:
    """The S3 lifecycle rule for the staging prefix (``PutBucketLifecycleConfiguration`` body,
    as boto3 and ``aws s3api put-bucket-lifecycle-configuration --lifecycle-configuration``
    take it): objects expire ``expire_after_days`` after they were written, and multipart
    uploads a killed writer left incomplete are aborted after ``abort_uploads_after_days``."""
    if expire_after_days < 1 or abort_uploads_after_days < 1:
        raise ObjectStoreConfigError("lifecycle rules count whole days: at least 1")
    prefix = prefix.strip("/")
    return {"Rules": [{
        "ID": "pipeline-staging-retention",
        "Filter": {"Prefix": f"{prefix}/" if prefix else ""},
        "Status": "Enabled",
        "Expiration": {"Days": expire_after_days},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": abort_uploads_after_days},
    }]}


def main(argv: list[str] | None = None) -> int:
    """``python -m category_pipeline.object_store lifecycle <prefix> <days>``: print the
    lifecycle JSON (for a bucket-creation job)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] != "lifecycle" or not args[2].isdigit():
        print("usage: python -m category_pipeline.object_store lifecycle <prefix> <days>", file=sys.stderr)
        return 2
    print(json.dumps(lifecycle_configuration(args[1], int(args[2]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
