"""Which errors fail a task at once and which are left to its retries."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowFailException

from category_pipeline.failures import fail_fast, is_transient
from category_pipeline.loader import LoadError
from category_pipeline.quality import QualityGateError
from category_pipeline.sources import SourceError, SourceMissing
from category_pipeline.storage import DatasetReadError
from category_pipeline.warehouse import WarehouseConfigError, WarehouseTimeout


@pytest.mark.parametrize(
    "error",
    [LoadError("dataset x lacks column amount"), DatasetReadError("staged dataset x is corrupt"),
     QualityGateError("gate"), SourceError("source file x is corrupt or truncated"),
     WarehouseConfigError("bad lock_timeout")],
    ids=lambda e: type(e).__name__,
)
def test_data_and_config_errors_fail_at_once_with_their_message(error):
    assert not is_transient(error)
    with pytest.raises(AirflowFailException) as raised:
        with fail_fast():
            raise error
    assert str(raised.value) == f"{error} (not retried: a retry cannot fix this)"
    assert raised.value.__cause__ is error


@pytest.mark.parametrize(
    "error",
    [SourceMissing("source file x does not exist"), WarehouseTimeout("did not answer"), ConnectionError("reset"),
     OSError("network unreachable")],
    ids=lambda e: type(e).__name__,
)
def test_transient_errors_are_left_to_the_retries(error):
    assert is_transient(error)
    with pytest.raises(type(error)):
        with fail_fast():
            raise error
