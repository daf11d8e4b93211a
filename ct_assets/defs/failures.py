"""How a failure inside a Dagster step reaches Dagster: a data problem fails at once (no retry), a
transient failure of an external system asks for a bounded retry (ct_assets.core.faults decides which is which)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import dagster as dg

from ct_assets import settings
from ct_assets.core.faults import ServiceUnavailable, StudyDataError, is_transient, one_line


@contextlib.contextmanager
def fails_fast() -> Iterator[None]:
    """Inside a Dagster step: a data problem fails the step at once with its one-line reason."""
    try:
        yield
    except StudyDataError as err:
        raise dg.Failure(description=str(err), allow_retries=False) from None


@contextlib.contextmanager
def external(system: str, address: str) -> Iterator[None]:
    """Inside a Dagster step: a transient failure of ``system`` asks Dagster for a retry (3, within a bounded
    total wait: settings.retry_policy); a data problem fails the step at once, in one line; anything else fails
    as it is."""
    try:
        with fails_fast():
            yield
    except dg.Failure:
        raise
    except Exception as err:
        if not is_transient(err):
            raise
        retries, delay = settings.retry_policy()
        raise dg.RetryRequested(max_retries=retries, seconds_to_wait=delay) from ServiceUnavailable(
            f"{system} at {address} did not answer: {one_line(err)}")
