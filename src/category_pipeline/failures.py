"""Which task errors a retry cannot fix, and failing fast on them.

Data and config errors (a dataset that does not fit its table, a corrupt file, a day
outside its quality gate, a bad warehouse setting) give the same result however often they
are retried: the task fails at once (AirflowFailException), instead of burning its retries.
Everything else (a lost connection, a timeout, a source file not there yet) is left to the
task's retries.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


def deterministic_errors() -> tuple[type[BaseException], ...]:
    # Imported when needed: DAG files import this module, and parsing them stays light.
    from category_pipeline.config import CategoryFileError
    from category_pipeline.loader import LoadError
    from category_pipeline.quality import QualityGateError
    from category_pipeline.sources import SourceError
    from category_pipeline.storage import DatasetReadError
    from category_pipeline.warehouse import WarehouseConfigError

    return (LoadError, DatasetReadError, QualityGateError, SourceError, WarehouseConfigError, CategoryFileError)


def is_transient(exc: BaseException) -> bool:
    """A source file that is not there yet may arrive: that one is worth retrying."""
    from category_pipeline.sources import SourceMissing

    return isinstance(exc, SourceMissing) or not isinstance(exc, deterministic_errors())


@contextlib.contextmanager
def fail_fast() -> Iterator[None]:
    """Re-raise a deterministic error as AirflowFailException (same message, no retry)."""
    try:
        yield
    except Exception as exc:
        if is_transient(exc):
            raise
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(f"{exc} (not retried: a retry cannot fix this)") from exc
