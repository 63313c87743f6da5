"""The fault suite's `--long` option (or `DOMAINFM_FAULTS_LONG=1`): 10 kill points per stage instead of 1."""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", default=False,
                     help="fault suite: 10 random kill points per stage (default 1) plus every named kill hook")


def long_mode(config: pytest.Config) -> bool:
    try:
        opt = bool(config.getoption("--long"))
    except ValueError:  # the option is registered only when tests/faults is on the command line
        opt = False
    return opt or os.environ.get("DOMAINFM_FAULTS_LONG") == "1"


@pytest.fixture(scope="session")
def faults_long(request: pytest.FixtureRequest) -> bool:
    return long_mode(request.config)
