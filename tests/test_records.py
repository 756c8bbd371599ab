"""jobs.records: the framework's records behave as `@dataclass` would make them, without compiling anything."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from jobs.config import RetryPolicy
from jobs.outcome import RunReport, RunStatus
from jobs.retention import HistoryPolicy
from jobs.schedule import Cron, Interval


def _reference(record: object, frozen: bool) -> object:
    """The same fields and values in a class @dataclass generates."""
    cls = type(record)
    fields = dataclasses.fields(cls)
    generated = dataclasses.make_dataclass(cls.__qualname__, [(f.name, object, dataclasses.field(
        repr=f.repr, compare=f.compare, hash=f.hash)) for f in fields], frozen=frozen)
    return generated(**{f.name: getattr(record, f.name) for f in fields})


FROZEN = [Interval(timedelta(hours=1)), Cron("0 3 * * 1-5", "Europe/Berlin"), HistoryPolicy("all", timedelta(days=2)),
          RetryPolicy()]


@pytest.mark.parametrize("record", FROZEN, ids=lambda r: type(r).__name__)
def test_a_frozen_record_compares_hashes_and_shows_as_a_frozen_dataclass(record) -> None:
    reference = _reference(record, frozen=True)
    assert repr(record) == repr(reference)
    same = dataclasses.replace(record)
    assert same == record and same is not record and hash(same) == hash(record)
    assert (record == reference) is False, "a record equals only its own class, as @dataclass's __eq__"
    assert {record: 1}[same] == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.__setattr__(dataclasses.fields(record)[0].name, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.__delattr__(dataclasses.fields(record)[0].name)


def test_replace_changes_one_field_and_keeps_the_validation_of_init() -> None:
    policy = HistoryPolicy()
    assert dataclasses.replace(policy, runs="all") == HistoryPolicy("all")
    assert dataclasses.replace(policy, runs="all") != policy
    with pytest.raises(ValueError, match="longer than zero"):
        dataclasses.replace(Interval(timedelta(hours=1)), every=timedelta(0))


def test_a_mutable_record_is_unhashable_as_a_dataclass_with_eq_is() -> None:
    report = RunReport("job", RunStatus.SUCCEEDED)
    assert type(report).__hash__ is None
    assert report == RunReport("job", RunStatus.SUCCEEDED) and report != RunReport("job", RunStatus.FAILED)
    report.error = "boom"
    assert report.error == "boom"
    assert dataclasses.asdict(report)["error"] == "boom"
