"""The platform chart's object store (charts/airflow-platform/templates/object-store.yaml):
the dev store (SeaweedFS), its kept Secret, its bucket Job, and the settings of an external
store, rendered by the real helm.

The bucket Job's script (files/object_store_buckets.py, taken from the rendered ConfigMap) is
RUN against a real S3 API on loopback (moto's server, tests/support/s3.py), with the
environment the Job gives it: the buckets and their lifecycle rules must exist afterwards, and
a second run (every upgrade runs it again) must change nothing and lose nothing. The dev store
itself is an image; it runs in the kind suite, not here.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import pytest

from tests.support.helm import REPO, render_platform, unavailable
from tests.support.kube import KUBERNETES_VERSION
from tests.support.pod_security import check_manifests

JOB = ("Job", "platform-object-store-buckets-1")
STORE = ("StatefulSet", "platform-object-store")
EXTERNAL_NONE = ("--set", "objectStore.enabled=false,objectStore.credentials.source=none")
KIND_VALUES = ("-f", str(REPO / "charts" / "airflow-platform" / "values-kind.yaml"))


def _index(objects: list[dict]) -> dict[tuple[str, str], dict]:
    return {(obj["kind"], obj["metadata"]["name"]): obj for obj in objects}


def _secret(obj: dict) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in obj["data"].items()}


def _object_store_objects(objects: list[dict]) -> list[dict]:
    return [obj for obj in objects if "object-store" in obj["metadata"]["name"]]


@pytest.fixture(scope="module")
def objects() -> dict[tuple[str, str], dict]:
    return _index(render_platform())


def _env(container: dict) -> dict[str, dict]:
    return {item["name"]: item for item in container["env"]}


# -- the objects ------------------------------------------------------------------------------


def test_the_store_its_secret_and_its_job_are_rendered(objects):
    names = {key for key in objects if "object-store" in key[1]}
    assert {("Service", "platform-object-store"), STORE, ("ConfigMap", "platform-object-store-buckets"), JOB,
            ("Secret", "object-store-credentials")} <= names


@pytest.mark.parametrize("args", [(), KIND_VALUES,
                                  ("--set", "objectStore.persistence.storageClassName=standard",
                                   "--set-json", 'imagePullSecrets=[{"name":"regcred"}]'),
                                  (*EXTERNAL_NONE, "--set", "networkPolicies.externalObjectStore.cidrs={10.0.0.0/8}")],
                         ids=["defaults", "kind", "options", "external"])
def test_objects_validate_strictly_against_kubernetes(args):
    try:
        import kubernetes_validate
    except ImportError:
        unavailable("kubernetes-validate is not installed (pip install kubernetes-validate==1.37.0)")
    rendered = _object_store_objects(render_platform(*args))
    assert rendered
    for obj in rendered:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {'.'.join(map(str, exc.path))}: {exc.message}")


def test_pods_pass_pod_security_restricted(objects):
    workloads = [objects[STORE], objects[JOB]]
    assert check_manifests(workloads) == []
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]) & set(container["resources"]["limits"])
            assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}


def test_the_service_serves_s3_on_9000_from_the_store(objects):
    service = objects[("Service", "platform-object-store")]
    assert [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [("s3", 9000, "s3")]
    store = objects[STORE]
    assert service["spec"]["selector"].items() <= store["spec"]["template"]["metadata"]["labels"].items()
    (container,) = store["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "chrislusf/seaweedfs:4.44"
    assert container["command"][:3] == ["/usr/bin/weed", "-logtostderr=true", "mini"]
    assert {"-s3.port=9000", "-dir=/data", "-s3.autoCreateBucket=false", "-master.telemetry=false"} <= set(container["command"])
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"s3": 9000}
    env = _env(container)
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "object-store-credentials", "key": "access-key-id"}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "object-store-credentials", "key": "secret-access-key"}
    (claim,) = store["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    kind = _index(render_platform(*KIND_VALUES))[STORE]
    assert kind["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert kind["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"] == {"cpu": "50m", "memory": "128Mi"}


def test_the_secret_holds_an_airflow_aws_connection_to_the_store(objects):
    from airflow.models.connection import Connection

    data = _secret(objects[("Secret", "object-store-credentials")])
    assert set(data) == {"access-key-id", "secret-access-key", "connection"}
    assert len(data["access-key-id"]) == 20 and len(data["secret-access-key"]) == 40
    connection = Connection.from_json(data["connection"], conn_id="object_store")
    assert connection.conn_type == "aws"
    assert (connection.login, connection.password) == (data["access-key-id"], data["secret-access-key"])
    assert connection.extra_dejson == {"endpoint_url": "http://platform-object-store:9000", "region_name": "us-east-1"}
    assert objects[("Secret", "object-store-credentials")]["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


# -- the bucket Job ---------------------------------------------------------------------------


def test_the_job_runs_the_script_against_the_store(objects):
    job = objects[JOB]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "airflow-platform:0.1.0"
    assert container["command"] == ["python3", "/opt/object-store/object_store_buckets.py"]
    assert pod["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] >= 1
    env = _env(container)
    assert env["OBJECT_STORE_ENDPOINT"]["value"] == "http://platform-object-store:9000"
    assert json.loads(env["OBJECT_STORE_BUCKETS"]["value"]) == [
        {"name": "pipeline-staging", "expirationDays": 7}, {"name": "airflow-logs", "expirationDays": 30}]
    assert env["OBJECT_STORE_ABORT_INCOMPLETE_MULTIPART_DAYS"]["value"] == "1"
    script = objects[("ConfigMap", "platform-object-store-buckets")]["data"]["object_store_buckets.py"]
    assert script.strip() == (REPO / "charts/airflow-platform/files/object_store_buckets.py").read_text().strip()


def test_retention_follows_the_values():
    job = _index(render_platform("--set", "objectStore.stagingRetentionDays=3,objectStore.logRetentionDays=90",
                                 "--set", "objectStore.abortIncompleteMultipartUploadDays=2"))[JOB]
    env = _env(job["spec"]["template"]["spec"]["containers"][0])
    assert json.loads(env["OBJECT_STORE_BUCKETS"]["value"]) == [
        {"name": "pipeline-staging", "expirationDays": 3}, {"name": "airflow-logs", "expirationDays": 90}]
    assert env["OBJECT_STORE_ABORT_INCOMPLETE_MULTIPART_DAYS"]["value"] == "2"


def _run_job_script(objects, s3, tmp_path) -> subprocess.CompletedProcess:
    """The Job's container, as a local process: its script and its plain env, the store's
    address and the loopback server's keys in place of the Secret's."""
    pod = objects[JOB]["spec"]["template"]["spec"]
    script = tmp_path / "object_store_buckets.py"
    script.write_text(objects[("ConfigMap", "platform-object-store-buckets")]["data"]["object_store_buckets.py"])
    env = {name: item["value"] for name, item in _env(pod["containers"][0]).items() if "value" in item}
    env |= {"OBJECT_STORE_ENDPOINT": s3.endpoint, "OBJECT_STORE_WAIT_SECONDS": "30",
            "AWS_ACCESS_KEY_ID": s3.aws_env()["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": s3.aws_env()["AWS_SECRET_ACCESS_KEY"], "PATH": os.environ["PATH"]}
    return subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)


def _rules(s3, bucket: str) -> dict:
    rules = s3.client().get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    return {rule["ID"]: rule for rule in rules}


def test_the_job_creates_the_buckets_and_lifecycle_rules_and_may_run_again(objects, loopback_s3, tmp_path):
    first = _run_job_script(objects, loopback_s3, tmp_path)
    assert first.returncode == 0, first.stderr
    for bucket, days in (("pipeline-staging", 7), ("airflow-logs", 30)):
        rules = _rules(loopback_s3, bucket)
        assert rules["expire-objects"]["Status"] == "Enabled"
        assert rules["expire-objects"]["Expiration"] == {"Days": days}
        assert rules["abort-incomplete-multipart-uploads"]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
        assert rules["expire-objects"]["Filter"] == {"Prefix": ""}
    loopback_s3.client().put_object(Bucket="pipeline-staging", Key="staging/kept.parquet", Body=b"data")

    second = _run_job_script(objects, loopback_s3, tmp_path)  # what the next upgrade does
    assert second.returncode == 0, second.stderr
    assert "pipeline-staging: exists" in second.stdout
    assert "staging/kept.parquet" in loopback_s3.keys("pipeline-staging")
    assert _rules(loopback_s3, "pipeline-staging")["expire-objects"]["Expiration"] == {"Days": 7}


def test_the_script_fails_by_name_when_the_store_is_unreachable(objects, tmp_path):
    from tests.support.ports import free_port

    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    pod = objects[JOB]["spec"]["template"]["spec"]
    script = tmp_path / "object_store_buckets.py"
    script.write_text(objects[("ConfigMap", "platform-object-store-buckets")]["data"]["object_store_buckets.py"])
    env = {name: item["value"] for name, item in _env(pod["containers"][0]).items() if "value" in item}
    env |= {"OBJECT_STORE_ENDPOINT": nowhere, "OBJECT_STORE_WAIT_SECONDS": "1",
            "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"}
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"{nowhere} did not answer within 1s" in result.stderr


def test_the_scripts_signature_is_aws_signature_v4():
    """The script signs without botocore; botocore's S3 signer must produce the same
    Authorization for the same request at the same time (moto does not check signatures)."""
    import importlib.util

    import botocore.auth
    import botocore.awsrequest
    import botocore.credentials

    spec = importlib.util.spec_from_file_location("buckets", REPO / "charts/airflow-platform/files/object_store_buckets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    url = "http://platform-object-store:9000/pipeline-staging?lifecycle"
    body = module.lifecycle_document(7, 1)
    request = botocore.awsrequest.AWSRequest(method="PUT", url=url, data=body, headers={"Content-MD5": "bWQ1"})
    botocore.auth.S3SigV4Auth(botocore.credentials.Credentials("AKID", "SECRET"), "s3", "us-east-1").add_auth(request)
    ours = module.sigv4_headers("PUT", url, body, access_key="AKID", secret_key="SECRET", region="us-east-1",
                                amz_date=request.headers["X-Amz-Date"], extra_headers={"Content-MD5": "bWQ1"})
    assert ours["authorization"] == request.headers["Authorization"]


# -- an external store ------------------------------------------------------------------------


def test_existing_secret_renders_no_store_no_job_no_secret():
    objects = render_platform("--set", "objectStore.enabled=false,objectStore.credentials.source=existingSecret")
    assert not _object_store_objects([o for o in objects if o["kind"] != "NetworkPolicy"])


def test_web_identity_renders_a_connection_without_keys_and_the_role_annotation():
    role = "arn:aws:iam::123456789012:role/airflow-tasks"
    objects = _index(render_platform(*EXTERNAL_NONE, "--set", "objectStore.region=eu-west-1",
                                     "--set-string", f"taskServiceAccount.annotations.eks\\.amazonaws\\.com/role-arn={role}"))
    assert STORE not in objects and JOB not in objects
    data = _secret(objects[("Secret", "object-store-credentials")])
    assert set(data) == {"connection"}
    assert json.loads(data["connection"]) == {"conn_type": "aws", "extra": {"region_name": "eu-west-1"}}
    account = objects[("ServiceAccount", "airflow-task-runner")]
    assert account["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": role}
    assert account["automountServiceAccountToken"] is False


def test_an_external_endpoint_goes_into_the_connection():
    objects = _index(render_platform(*EXTERNAL_NONE, "--set", "objectStore.endpoint=https://storage.example.com"))
    connection = json.loads(_secret(objects[("Secret", "object-store-credentials")])["connection"])
    assert connection["extra"] == {"endpoint_url": "https://storage.example.com", "region_name": "us-east-1"}


@pytest.mark.parametrize("args, complaint", [
    (("--set", "objectStore.enabled=false"), "objectStore.credentials.source=generated would make keys no store knows"),
    (("--set", "objectStore.credentials.source=none"), "objectStore.enabled=true needs static credentials"),
    (("--set", "objectStore.credentials.source=iam"), "/objectStore/credentials/source"),
    (("--set", "objectStore.buckets.staging=Bad_Bucket"), "/objectStore/buckets/staging"),
    (("--set", "objectStore.stagingRetentionDays=0"), "/objectStore/stagingRetentionDays"),
    (("--set", "objectStore.uid=0"), "/objectStore/uid"),
])
def test_bad_settings_fail_by_name(args, complaint):
    with pytest.raises(subprocess.CalledProcessError) as failure:
        render_platform(*args)
    assert complaint in failure.value.stderr


def test_task_pods_get_the_secret_only_if_allowed_and_only_web_identity_tokens():
    """By default the admission policy denies task pods object-store-credentials (a task gets
    the connection object_store from the API server's execution API), unless an operator adds
    it to admissionPolicy.allowedSecrets; and a projected token only for an allowed audience
    (IRSA's sts.amazonaws.com), never the API's."""
    from tests.test_admission_policy import SCHEDULER, evaluator, executor_pod, secret_denial

    secret_env = {"spec": {"containers": [{"name": "base", "env": [{"name": "AIRFLOW_CONN_OBJECT_STORE", "valueFrom": {
        "secretKeyRef": {"name": "object-store-credentials", "key": "connection"}}}]}]}}
    pod = executor_pod(secret_env)
    assert pod["spec"]["containers"][0]["env"][-1]["name"] == "AIRFLOW_CONN_OBJECT_STORE"  # the merge kept it
    assert evaluator().review(pod, SCHEDULER).denials == [secret_denial("object-store-credentials")]
    allowed = '["git-credentials","warehouse-connection","git-dags-connection","object-store-credentials"]'
    assert evaluator("--set-json", f"admissionPolicy.allowedSecrets={allowed}").review(pod, SCHEDULER).denials == []

    def token(audience):
        return {"spec": {"volumes": [{"name": "aws-iam-token", "projected": {"sources": [
            {"serviceAccountToken": {"path": "token", "audience": audience}}]}}]}}

    default = evaluator()
    assert default.review(executor_pod(token("sts.amazonaws.com")), SCHEDULER).denials
    irsa = evaluator("--set", "admissionPolicy.allowedTokenAudiences={sts.amazonaws.com}")
    assert irsa.review(executor_pod(token("sts.amazonaws.com")), SCHEDULER).denials == []
    (denial,) = irsa.review(executor_pod(token("https://kubernetes.default.svc")), SCHEDULER).denials
    assert "but for the audiences sts.amazonaws.com" in denial
