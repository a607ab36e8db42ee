"""A real headless Chromium for the console's tests: Debian's chromium and chromedriver,
installed here when the machine has none (as PostgreSQL and Mosquitto are); never skipped."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from tests.conftest import apt_install


def _binaries() -> tuple[str, str]:
    def found() -> tuple[str | None, str | None]:
        browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                        if shutil.which(n)), None)
        return browser, shutil.which("chromedriver")

    browser, driver = found()
    if browser is None or driver is None:
        apt_install("chromium", "chromium-driver")
        browser, driver = found()
    assert browser and driver, "chromium and chromedriver are needed for the console tests"
    return browser, driver


@pytest.fixture(scope="session")
def chromium() -> tuple[str, str]:
    return _binaries()


class Browser:
    """Selenium's blocking calls run in a thread: the gateway under test shares this loop."""

    def __init__(self, driver: webdriver.Chrome, base: str, shots: str) -> None:
        self.driver, self.base, self.shots = driver, base, shots

    async def run(self, func: Any, *args: Any) -> Any:
        return await asyncio.to_thread(func, *args)

    async def open(self, path: str) -> None:
        await self.run(self.driver.get, self.base + path)

    async def text(self, css: str = "body") -> str:
        return str(await self.run(lambda: self.driver.find_element(By.CSS_SELECTOR, css).text))

    async def all_text(self, css: str) -> list[str]:
        return list(await self.run(lambda: [e.text for e in self.driver.find_elements(
            By.CSS_SELECTOR, css)]))

    async def count(self, css: str) -> int:
        return int(await self.run(lambda: len(self.driver.find_elements(By.CSS_SELECTOR, css))))

    async def fill(self, css: str, value: str) -> None:
        def work() -> None:
            box = self.driver.find_element(By.CSS_SELECTOR, css)
            box.clear()
            box.send_keys(value)
        await self.run(work)

    async def select(self, css: str, value: str) -> None:
        from selenium.webdriver.support.ui import Select

        await self.run(lambda: Select(self.driver.find_element(By.CSS_SELECTOR, css))
                       .select_by_value(value))

    async def click(self, css: str) -> None:
        await self.run(lambda: self.driver.find_element(By.CSS_SELECTOR, css).click())

    async def login(self, key: str) -> None:
        await self.open("/console/login")
        await self.fill("#key", key)
        await self.click("#login")
        async with asyncio.timeout(10):  # logged in (a page with #who) or told why not
            while not (await self.count("#who") or await self.count(".error")):
                await asyncio.sleep(0.05)

    async def logout(self) -> None:
        """Log out and wait for the login page (the next page opened must not race it)."""
        await self.click("form.who button")
        async with asyncio.timeout(10):
            while await self.path() != "/console/login" or not await self.count("#key"):
                await asyncio.sleep(0.05)

    async def path(self) -> str:
        from urllib.parse import urlsplit

        url = await self.run(lambda: self.driver.current_url)
        return urlsplit(url).path

    async def wait_for(self, css: str, words: str, timeout: float = 20) -> str:
        """The element's text once it contains `words` (the page updates itself)."""
        from selenium.common.exceptions import StaleElementReferenceException

        async with asyncio.timeout(timeout):
            while True:
                if await self.count(css):  # else: not on the page yet
                    try:
                        shown = await self.text(css)
                    except StaleElementReferenceException:  # the page was being replaced
                        continue
                    if words in shown:
                        return shown
                await asyncio.sleep(0.2)

    async def screenshot(self, name: str, width: int = 1200) -> str:
        path = os.path.join(self.shots, f"console-{name}.png")

        def work() -> None:
            height = self.driver.execute_script(
                "return Math.min(2400, document.documentElement.scrollHeight)")
            self.driver.set_window_size(width, max(600, int(height) + 120))
            self.driver.save_screenshot(path)
            self.driver.set_window_size(1200, 900)
        await self.run(work)
        return path


@pytest.fixture
def browser_factory(chromium: tuple[str, str], tmp_path: Any) -> Iterator[Any]:
    """browser_factory(base_url) -> Browser; screenshots go to $COCHARGE_SCREENSHOTS (docs/img
    when the docs are refreshed) or the test's temporary folder."""
    path, driver_path = chromium
    made: list[webdriver.Chrome] = []
    shots = os.environ.get("COCHARGE_SCREENSHOTS") or str(tmp_path)
    os.makedirs(shots, exist_ok=True)

    def make(base: str) -> Browser:
        options = webdriver.ChromeOptions()
        options.binary_location = path
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1200,900", "--lang=en-US", "--hide-scrollbars"):
            options.add_argument(arg)
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
        made.append(driver)
        return Browser(driver, base, shots)

    yield make
    for driver in made:
        driver.quit()
