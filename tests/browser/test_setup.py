"""Without Chromium the browser tests fail and say how to install it; they never skip."""

import pytest

from tests.browser.conftest import chromium_path


def test_a_missing_chromium_fails_with_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("CHROMIUM_PATH", str(tmp_path / "no-chromium-here"))

    with pytest.raises(pytest.fail.Exception, match=r"apt-get install -y --no-install-recommends chromium"):
        chromium_path()


def test_the_chromium_found_is_a_file_that_exists(monkeypatch):
    monkeypatch.delenv("CHROMIUM_PATH", raising=False)

    path = chromium_path()

    assert path.endswith("chromium")
