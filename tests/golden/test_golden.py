"""Every algorithm and engine still gives, bit for bit, the numbers recorded before the core
was opened up (issue 12). See ``golden_cases.py`` for the cases and how they were recorded."""

from __future__ import annotations

import json

import pytest
from golden_cases import GOLDEN, cases, record

RECORDED = json.loads(GOLDEN.read_text())


def test_every_case_has_a_record():
    assert sorted(RECORDED) == sorted(cases())


@pytest.mark.parametrize("name", sorted(cases()))
def test_case_matches_its_golden_record(name):
    assert record(cases()[name]) == RECORDED[name]
