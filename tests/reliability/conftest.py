"""The reliability scripts' fast subsets: short runs whose figures go to a temporary folder."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

RELIABILITY = Path(__file__).resolve().parents[2] / "reliability"
if str(RELIABILITY) not in sys.path:
    sys.path.insert(0, str(RELIABILITY))


@pytest.fixture(autouse=True)
def restore_sys_path() -> None:
    """The scripts put the test jobs' package on sys.path for their forks; later tests must not see it."""
    saved = list(sys.path)
    yield
    sys.path[:] = saved


@pytest.fixture(autouse=True)
def short_run_results(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A short run must never replace the figures of a full one in reliability/results/."""
    folder = tmp_path_factory.mktemp("reliability-results")
    monkeypatch.setenv("CRONWARDEN_RELIABILITY_RESULTS", str(folder))
    import _common

    monkeypatch.setattr(_common, "RESULTS", folder)
    return folder
