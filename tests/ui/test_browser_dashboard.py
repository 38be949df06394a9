"""The single-cluster dashboard in headless chromium, against the in-process API server (no
node: pods stay Pending): token login, a list updated live from a watch, an RBAC denial shown
with the API server's message, an expired session back at the login page."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from sampan.ui.component import DashboardComponent
from tests.ui.browser import chrome, screenshot
from tests.ui.support import service_account_token

WAIT_S = 60


def _login(driver: Any, base: str, token: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(base + "/dashboard/login")
    driver.find_element(By.ID, "secret").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()


async def test_dashboard_in_a_browser(
    dashboard: DashboardComponent, admin_token: str, client: Any
) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base = f"https://127.0.0.1:{dashboard.port}"
    nobody = await service_account_token(client, "nobody", admin=False)
    driver = await asyncio.to_thread(chrome)
    # htmx swaps parts of the page while a condition looks: an element found a moment ago
    # may be gone when it is read; the condition is then simply tried again.
    wait = WebDriverWait(driver, WAIT_S, ignored_exceptions=(StaleElementReferenceException,))

    def live(d: Any) -> bool:
        return d.find_element(By.CSS_SELECTOR, "table.live").get_attribute("data-live") == "1"

    try:
        await asyncio.to_thread(_login, driver, base, admin_token)
        await asyncio.to_thread(wait.until, lambda d: "/k/pods" in d.current_url)
        await asyncio.to_thread(wait.until, live)
        await asyncio.to_thread(driver.execute_script, "window.__sameDocument = true;")
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "live-1"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        }
        await client.request(
            "POST", "/api/v1/namespaces/default/pods", body=json.loads(json.dumps(pod))
        )
        await asyncio.to_thread(
            wait.until,
            lambda d: "live-1" in d.find_element(By.CSS_SELECTOR, "table.live tbody").text,
        )
        assert await asyncio.to_thread(
            driver.execute_script, "return window.__sameDocument === true;"
        )
        await asyncio.to_thread(screenshot, driver, "11-dashboard-pods")

        # The session ends (idle): the next page is the login page.
        dashboard.ui.sessions.idle_ttl_s = 0
        await asyncio.to_thread(driver.get, base + "/dashboard/c/local/k/services")
        assert "/dashboard/login" in driver.current_url
        dashboard.ui.sessions.idle_ttl_s = 1800

        # A token without rights: the API server's refusal, as it wrote it.
        await asyncio.to_thread(_login, driver, base, nobody)
        await asyncio.to_thread(
            wait.until, lambda d: "forbidden" in d.find_element(By.TAG_NAME, "main").text
        )
        text = driver.find_element(By.TAG_NAME, "main").text
        assert 'User "system:serviceaccount:kube-system:nobody" cannot list resource' in text
        await asyncio.to_thread(screenshot, driver, "12-dashboard-forbidden")
    finally:
        await asyncio.to_thread(driver.quit)
