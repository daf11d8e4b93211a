"""The online layout the platform writes directly is Feast's private one: an unchecked Feast fails loudly."""

import importlib.metadata

import pytest

from ct_assets.adapters import feast_layout


def test_the_installed_feast_is_a_checked_one():
    feast_layout.require_known_feast()


def test_an_unchecked_feast_fails_before_anything_is_written(monkeypatch):
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.99.0" if name == "feast" else "1")
    with pytest.raises(feast_layout.UnknownFeast, match=r"Feast 0\.99\.0: .*KNOWN_FEAST"):
        feast_layout.require_known_feast()
    with pytest.raises(feast_layout.UnknownFeast):
        feast_layout.write_latest(store=None, s=None, view=None, latest=None)
