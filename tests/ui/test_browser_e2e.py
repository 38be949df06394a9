"""The acceptance of the web UI in a real browser against a real node: ``sampan server
--manager`` (a real process with containerd, real pods), Debian's chromium headless.

One walk through, as a user would (kept in one test: one server start): log in with the
bootstrap password and change it, open cluster ``local``, see a Deployment's pod, open its
logs and see the line it printed (and a log line of HTML shown as text), open a shell and run
``echo hi``, scale the Deployment to 3 and see three pods appear without reloading, edit a
ConfigMap's YAML, delete a pod after confirming; no alert ever fires. Screenshots of the main
pages at 1280x800 (and the pods page at phone width) go to ``tests/ui/browser.SCREENSHOTS``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.test_single_node import Cluster, cluster  # noqa: F401 (the fixture)
from tests.ui.browser import chrome, screenshot, set_viewport

pytestmark = pytest.mark.slow

NEW_PASSWORD = "correct horse battery staple"
WAIT_S = 90
XSS_LOG = "<img src=x onerror=alert(1)>"
MANIFESTS = {
    "apiVersion": "v1",
    "kind": "List",
    "items": [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {
                        "labels": {"app": "web"},
                        "annotations": {"note": "<script>alert(1)</script>"},
                    },
                    "spec": {
                        "terminationGracePeriodSeconds": 1,
                        "containers": [
                            {
                                "name": "main",
                                "image": "busybox:1.36",
                                "imagePullPolicy": "IfNotPresent",
                                "command": [
                                    "sh",
                                    "-c",
                                    f"echo hello-from-web; echo '{XSS_LOG}'; sleep 3600",
                                ],
                            }
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "ui-config", "namespace": "default"},
            "data": {"color": "blue"},
        },
    ],
}


def _no_alert(driver: Any) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        text = driver.switch_to.alert.text
    except NoAlertPresentException:
        return
    raise AssertionError(f"an alert fired: {text!r}")


class _Wait:
    """``WebDriverWait.until`` whose timeout says what the browser showed (the address and
    the page's text, and a screenshot ``failed``) and the server's last log lines: a condition
    that never came true is otherwise an empty ``TimeoutException``."""

    def __init__(self, driver: Any, server: Cluster) -> None:
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        # htmx swaps parts of the page while a condition looks: an element found a moment ago
        # may be gone when it is read; the condition is then simply tried again.
        self._wait = WebDriverWait(
            driver, WAIT_S, ignored_exceptions=(StaleElementReferenceException,)
        )
        self._driver = driver
        self._server = server

    def until(self, condition: Any) -> Any:
        from selenium.common.exceptions import TimeoutException, WebDriverException

        try:
            return self._wait.until(condition)
        except TimeoutException:
            driver = self._driver
            try:
                shown = f"{driver.current_url}\n{driver.find_element('tag name', 'body').text}"
                screenshot(driver, "failed")
            except WebDriverException as exc:
                shown = f"(the page could not be read: {exc.msg})"
            raise AssertionError(
                f"timed out after {WAIT_S}s; the browser showed:\n{shown[:3000]}\n"
                f"--- the server's log ---\n{self._server.tail()}"
            ) from None


@pytest.mark.parametrize("cluster", [{"manager": True}], ids=["manager"], indirect=True)
def test_the_ui_in_a_browser(cluster: Cluster) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec

    password_file = cluster.data / "server" / "manager" / "bootstrap-password"
    cluster.wait("the manager's bootstrap password", password_file.exists)
    manifest = cluster.root / "ui.json"
    manifest.write_text(json.dumps(MANIFESTS))
    cluster.wait(
        "the apply to succeed",
        lambda: cluster.kubectl("apply", "-f", str(manifest), check=False) != "",
    )
    base = f"https://127.0.0.1:{cluster.manager_port}/dashboard"

    driver = chrome()
    wait = _Wait(driver, cluster)
    try:
        # Log in; the bootstrap password must be changed first.
        driver.get(base + "/")
        wait.until(ec.presence_of_element_located((By.ID, "username")))
        screenshot(driver, "01-login")
        driver.find_element(By.ID, "username").send_keys("admin")
        driver.find_element(By.ID, "secret").send_keys(password_file.read_text().strip())
        driver.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
        wait.until(ec.presence_of_element_located((By.ID, "confirm")))
        driver.find_element(By.ID, "current").send_keys(password_file.read_text().strip())
        driver.find_element(By.ID, "new").send_keys(NEW_PASSWORD)
        driver.find_element(By.ID, "confirm").send_keys(NEW_PASSWORD)
        driver.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()

        # Clusters list -> local.
        link = wait.until(ec.element_to_be_clickable((By.LINK_TEXT, "local")))
        assert "Connected" in driver.find_element(By.TAG_NAME, "main").text
        screenshot(driver, "02-clusters")
        link.click()
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "table.live")))

        # The Deployment and its pod, Running.
        driver.get(base + "/c/local/k/deployments/default/web")
        wait.until(lambda d: "Running" in d.find_element(By.CSS_SELECTOR, "table.live tbody").text)
        screenshot(driver, "03-deployment")
        pod_link = driver.find_element(By.CSS_SELECTOR, "table.live tbody tr td a")
        pod_name = pod_link.text
        pod_link.click()
        wait.until(ec.presence_of_element_located((By.ID, "yaml")))
        yaml_text = driver.find_element(By.ID, "yaml").get_attribute("value")
        assert "<script>alert(1)</script>" in yaml_text  # the annotation, as text
        screenshot(driver, "04-pod")

        # Logs: the line it printed, and the HTML line as text.
        driver.find_element(By.LINK_TEXT, "Logs").click()
        wait.until(lambda d: "hello-from-web" in d.find_element(By.ID, "log").text)
        log_text = driver.find_element(By.ID, "log").text
        assert XSS_LOG in log_text
        assert driver.find_elements(By.CSS_SELECTOR, "#log img") == []
        _no_alert(driver)
        screenshot(driver, "05-logs")

        # Shell: echo hi.
        driver.get(f"{base}/c/local/shell/default/{pod_name}")
        wait.until(
            lambda d: d.find_element(By.ID, "terminal").get_attribute("data-connected") == "1"
        )
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, ".xterm-rows").text.strip())
        area = driver.find_element(By.CSS_SELECTOR, ".xterm-helper-textarea")
        area.send_keys("echo h''i" + Keys.ENTER)
        wait.until(
            lambda d: any(
                line.strip() == "hi"
                for line in d.find_element(By.CSS_SELECTOR, ".xterm-rows").text.splitlines()
            )
        )
        screenshot(driver, "06-shell")

        # Scale to 3: three pods appear on the same page (no reload).
        driver.get(base + "/c/local/k/deployments/default/web")
        wait.until(ec.presence_of_element_located((By.ID, "replicas")))
        wait.until(
            lambda d: (
                d.find_element(By.CSS_SELECTOR, "table.live").get_attribute("data-live") == "1"
            )
        )
        driver.execute_script("window.__sameDocument = true;")
        replicas = driver.find_element(By.ID, "replicas")
        replicas.clear()
        replicas.send_keys("3")
        driver.find_element(By.XPATH, "//button[normalize-space()='Scale']").click()
        wait.until(lambda d: "Scaled web to 3" in d.find_element(By.ID, "result").text)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "table.live tbody tr")) == 3)
        assert driver.execute_script("return window.__sameDocument === true;")
        screenshot(driver, "07-scaled")

        # Edit a ConfigMap's YAML (server-side apply).
        driver.get(base + "/c/local/k/configmaps/default/ui-config")
        area = wait.until(ec.presence_of_element_located((By.ID, "yaml")))
        original = area.get_attribute("value")
        driver.execute_script("arguments[0].value = arguments[1];", area, original + "data: [\n")
        driver.find_element(By.XPATH, "//button[contains(., 'Apply')]").click()
        wait.until(lambda d: "Malformed YAML: line" in d.find_element(By.ID, "apply-result").text)
        text = original.replace("color: blue", "color: green")
        driver.execute_script("arguments[0].value = arguments[1];", area, text)
        driver.find_element(By.XPATH, "//button[contains(., 'Apply')]").click()
        # kubectl's client-side apply owns data.color: the server's conflict, inline ...
        wait.until(lambda d: "conflict" in d.find_element(By.ID, "apply-result").text)
        # ... then taking the field over.
        driver.find_element(By.NAME, "force").click()
        driver.find_element(By.XPATH, "//button[contains(., 'Apply')]").click()
        wait.until(lambda d: "Applied" in d.find_element(By.ID, "apply-result").text)
        screenshot(driver, "08-configmap")
        got = cluster.kubectl("get", "cm", "ui-config", "-o", "jsonpath={.data.color}")
        assert got == "green"

        # Delete a pod, after confirming.
        driver.get(f"{base}/c/local/k/pods/default/{pod_name}")
        wait.until(ec.presence_of_element_located((By.XPATH, "//button[.='Delete']"))).click()
        alert = wait.until(ec.alert_is_present())
        assert pod_name in alert.text
        alert.accept()
        wait.until(lambda d: f"Deleted {pod_name}" in d.find_element(By.ID, "result").text)
        gone = cluster.kubectl(
            "get",
            "pod",
            pod_name,
            "--ignore-not-found",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}",
        )
        assert gone != "" or cluster.kubectl("get", "pod", pod_name, "--ignore-not-found") == ""

        # The node (conditions, its pods) and the events (warnings first).
        driver.get(base + "/c/local/k/nodes")
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "table.live tbody tr a")))
        driver.find_element(By.CSS_SELECTOR, "table.live tbody tr a").click()
        wait.until(lambda d: "KubeletReady" in d.find_element(By.TAG_NAME, "main").text)
        screenshot(driver, "09-node")
        driver.get(base + "/c/local/k/events")
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "table.live tbody tr")))
        screenshot(driver, "09-events")

        # The pods page at 1280x800 and at phone width.
        driver.get(base + "/c/local/k/pods?ns=default")
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "table.live tbody tr")))
        screenshot(driver, "09-pods")
        set_viewport(driver, 390, 844, mobile=True)
        driver.refresh()
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "table.live tbody tr")))
        screenshot(driver, "10-pods-phone")
        _no_alert(driver)
    finally:
        driver.quit()
