"""Creates the object store's buckets and sets their lifecycle rules; safe to run again.

Run by the platform chart's bucket Job (templates/object-store.yaml) on every install and
upgrade. Python's standard library only (requests are signed with AWS Signature Version 4
here), so that it runs in any image with python3, with or without boto3.

Environment:
  OBJECT_STORE_ENDPOINT     http://platform-object-store:9000 (path-style requests)
  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION
  OBJECT_STORE_BUCKETS      JSON list: [{"name": "pipeline-staging", "expirationDays": 7}, ...]
  OBJECT_STORE_ABORT_INCOMPLETE_MULTIPART_DAYS   incomplete multipart uploads are aborted
                            after this many days, in every bucket
  OBJECT_STORE_WAIT_SECONDS how long to wait for the store to answer (it may start after us)

For each bucket: create it unless it exists, put its lifecycle configuration (objects expire
after expirationDays; incomplete multipart uploads are aborted), then read the configuration
back and fail unless the store kept both rules: a store that accepts and ignores a rule must
not pass for one that enforces it. Exit status 0 when every bucket is as configured.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

S3_NAMESPACE = "{http://s3.amazonaws.com/doc/2006-03-01/}"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class StoreError(RuntimeError):
    """The store refused a request or answered something unexpected."""


def _sign(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def sigv4_headers(method: str, url: str, body: bytes, *, access_key: str, secret_key: str, region: str,
                  amz_date: str, extra_headers: dict[str, str] | None = None) -> dict[str, str]:
    """The headers of an S3 request signed with AWS Signature Version 4 (service s3), at
    `amz_date` (YYYYMMDDTHHMMSSZ). Every header given is signed."""
    parts = urllib.parse.urlsplit(url)
    payload_hash = hashlib.sha256(body).hexdigest()
    headers = {"host": parts.netloc, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
    headers |= {name.lower(): value.strip() for name, value in (extra_headers or {}).items()}
    signed = ";".join(sorted(headers))
    canonical_query = "&".join(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
        for k, v in sorted(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    )
    canonical_request = "\n".join([
        method,
        urllib.parse.quote(parts.path or "/", safe="/-_.~"),
        canonical_query,
        "".join(f"{name}:{headers[name]}\n" for name in sorted(headers)),
        signed,
        payload_hash,
    ])
    scope = f"{amz_date[:8]}/{region}/s3/aws4_request"
    string_to_sign = "\n".join([
        "AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest(),
    ])
    key = _sign(_sign(_sign(_sign(f"AWS4{secret_key}".encode(), amz_date[:8]), region), "s3"), "aws4_request")
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"
    )
    return headers


class Store:
    """Signed path-style requests to one S3 endpoint."""

    def __init__(self, endpoint: str, access_key: str, secret_key: str, region: str, timeout: float = 30):
        self.endpoint = endpoint.rstrip("/")
        self.access_key, self.secret_key, self.region, self.timeout = access_key, secret_key, region, timeout

    def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None):
        """(status, body) of a signed request; HTTP errors are answers too, not exceptions."""
        url = self.endpoint + path
        amz_date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        signed = sigv4_headers(method, url, body, access_key=self.access_key, secret_key=self.secret_key,
                               region=self.region, amz_date=amz_date, extra_headers=headers)
        signed.pop("host")  # urllib sets it, from the same URL
        request = urllib.request.Request(url, data=body if method in ("PUT", "POST") else None,
                                         method=method, headers=signed)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def wait_until_answering(self, seconds: float) -> None:
        """Until the store answers HTTP at all (any status), or StoreError after `seconds`."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                self.request("GET", "/")
                return
            except (urllib.error.URLError, OSError) as error:
                if time.monotonic() >= deadline:
                    raise StoreError(f"{self.endpoint} did not answer within {seconds:.0f}s: {error}") from error
                print(f"waiting for {self.endpoint}: {error}", flush=True)
                time.sleep(2)

    def ensure_bucket(self, name: str) -> bool:
        """Create bucket `name` unless it exists; True when it was created now."""
        status, body = self.request("HEAD", f"/{name}")
        if status == 200:
            return False
        if status != 404:
            raise StoreError(f"HEAD bucket {name}: HTTP {status} {body[:300]!r}")
        status, body = self.request("PUT", f"/{name}")
        if status == 200:
            return True
        # Created meanwhile (another run): fine when it is ours.
        if status == 409 and b"BucketAlreadyOwnedByYou" in body:
            return False
        raise StoreError(f"create bucket {name}: HTTP {status} {body[:300]!r}")

    def put_lifecycle(self, name: str, document: bytes) -> None:
        # S3 requires an integrity header on this call (Content-MD5 is the one every store knows).
        md5 = base64.b64encode(hashlib.md5(document).digest()).decode()  # noqa: S324 - the protocol's checksum
        status, body = self.request("PUT", f"/{name}?lifecycle", document,
                                    {"Content-MD5": md5, "Content-Type": "application/xml"})
        if status not in (200, 204):
            raise StoreError(f"put lifecycle of {name}: HTTP {status} {body[:300]!r}")

    def get_lifecycle(self, name: str) -> list[dict]:
        status, body = self.request("GET", f"/{name}?lifecycle")
        if status == 404 or (status == 204 and not body):
            return []
        if status != 200:
            raise StoreError(f"get lifecycle of {name}: HTTP {status} {body[:300]!r}")
        return parse_lifecycle(body)


def lifecycle_document(expiration_days: int, abort_days: int) -> bytes:
    """Two rules for the whole bucket: objects expire, incomplete multipart uploads are aborted."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<LifecycleConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        "<Rule><ID>expire-objects</ID><Filter><Prefix></Prefix></Filter><Status>Enabled</Status>"
        f"<Expiration><Days>{int(expiration_days)}</Days></Expiration></Rule>"
        "<Rule><ID>abort-incomplete-multipart-uploads</ID><Filter><Prefix></Prefix></Filter><Status>Enabled</Status>"
        f"<AbortIncompleteMultipartUpload><DaysAfterInitiation>{int(abort_days)}</DaysAfterInitiation>"
        "</AbortIncompleteMultipartUpload></Rule>"
        "</LifecycleConfiguration>"
    ).encode()


def parse_lifecycle(body: bytes) -> list[dict]:
    """The enabled rules of a GetBucketLifecycleConfiguration answer, as
    {"expirationDays": n} or {"abortDays": n}, one per action."""
    rules = []
    for rule in ET.fromstring(body).iter(f"{S3_NAMESPACE}Rule"):
        if (rule.findtext(f"{S3_NAMESPACE}Status") or "").strip() != "Enabled":
            continue
        days = rule.findtext(f"{S3_NAMESPACE}Expiration/{S3_NAMESPACE}Days")
        if days:
            rules.append({"expirationDays": int(days)})
        abort = rule.findtext(f"{S3_NAMESPACE}AbortIncompleteMultipartUpload/{S3_NAMESPACE}DaysAfterInitiation")
        if abort:
            rules.append({"abortDays": int(abort)})
    return rules


def configure(store: Store, buckets: list[dict], abort_days: int) -> None:
    for bucket in buckets:
        name, days = bucket["name"], int(bucket["expirationDays"])
        created = store.ensure_bucket(name)
        store.put_lifecycle(name, lifecycle_document(days, abort_days))
        kept = store.get_lifecycle(name)
        wanted = [{"expirationDays": days}, {"abortDays": abort_days}]
        missing = [rule for rule in wanted if rule not in kept]
        if missing:
            raise StoreError(f"bucket {name}: the store did not keep the lifecycle rules {missing} (it has {kept})")
        print(f"bucket {name}: {'created' if created else 'exists'}; objects expire after {days} days, "
              f"incomplete multipart uploads are aborted after {abort_days} days", flush=True)


def _required(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise SystemExit(f"object_store_buckets: environment variable {name} is not set")
    return value


def main() -> int:
    try:
        buckets = json.loads(_required("OBJECT_STORE_BUCKETS"))
        assert isinstance(buckets, list) and all({"name", "expirationDays"} <= set(b) for b in buckets)
    except (ValueError, AssertionError):
        raise SystemExit('object_store_buckets: OBJECT_STORE_BUCKETS must be [{"name": ..., "expirationDays": ...}, ...]')
    store = Store(_required("OBJECT_STORE_ENDPOINT"), _required("AWS_ACCESS_KEY_ID"),
                  _required("AWS_SECRET_ACCESS_KEY"), os.environ.get("AWS_REGION") or "us-east-1")
    try:
        store.wait_until_answering(float(os.environ.get("OBJECT_STORE_WAIT_SECONDS") or 600))
        configure(store, buckets, int(os.environ.get("OBJECT_STORE_ABORT_INCOMPLETE_MULTIPART_DAYS") or 1))
    except StoreError as error:
        print(f"object_store_buckets: {error}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
