"""A real headless Chromium (Debian's `chromium`, driven by Playwright) against a live server.

Playwright's own browser builds are never downloaded: the tests launch /usr/bin/chromium (or
CHROMIUM_PATH). Without it they fail, saying how to install it, rather than skip: a browser test
that silently does not run tests nothing. Every test leaves a screenshot in test-artifacts/.
"""

import os
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


def chromium_path() -> str:
    path = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(path):
        pytest.fail(
            "Chromium is not installed, and the browser tests need it. Install Debian's package:\n"
            "    sudo apt-get install -y --no-install-recommends chromium\n"
            "(.ci/run does this), or point CHROMIUM_PATH at a Chromium binary.",
            pytrace=False,
        )
    return path


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    """The browser tests run last. They commit (for the live server to see) and the database is
    flushed after each, so the content types and permissions come back under new ids; running them
    last keeps every other test's view of the migrated rows as the migrations left them. (No test
    restores migrated rows with `serialized_rollback`: it collides with such recreated rows; the
    role groups, the one migrated data tests need, are recreated by the fixtures.)"""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; Django then refuses ORM calls here
    # unless told that this thread is not serving async code, which it is not.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            launched = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            yield launched
            launched.close()


@pytest.fixture
def page(browser, request, settings):
    # The live parts of the pages refresh every second here rather than every ten.
    settings.IOTHUB_DASHBOARD_REFRESH_SECONDS = 1
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(15_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    yield tab
    ARTIFACTS.mkdir(exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    try:
        tab.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def log_in(page, live_server, username: str, password: str, then: str = "/") -> None:
    page.goto(f"{live_server.url}/login/?next={then}")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}{then}")


# The dashboard tests' data: a device with an hour of readings, its rule, the event it raised.
from tests.dashboard.conftest import event, hour_of_readings, rule  # noqa: E402, F401
