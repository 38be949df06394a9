"""Web UI benchmark: ``python -m bench.ui [--pods 1000] [--tabs 4] [--idle-s 60]``.

A child process (``python -m bench.ui --serve``) runs an in-process API server (SQLite, real
TLS) and the single-cluster dashboard in front of it, and creates ``--pods`` pods (no node:
they stay Pending, which is all the pods page needs). This process drives Debian's chromium
headless through the system chromedriver and prints:

* **first meaningful paint of the pods page**: from navigation start to the first contentful
  paint, and to the table holding every pod (``DOMContentLoaded``; the rows are rendered on
  the server), median of 5 loads; plus the page's size in bytes;
* **idle CPU of the server process** (API server + dashboard, user + system time from
  ``/proc/<pid>/stat``) over ``--idle-s`` seconds with no tab open (the baseline), then with
  ``--tabs`` tabs open on the pods page (each holds one server-sent-events stream fed by one
  watch); the figure is the difference per tab, as a percentage of one core
  (goal: < 0.5 %).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"labels": {"app": "bench"}},
    "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]},
}


async def serve(pods: int) -> None:
    from tests.support.apiserver import ApiServerHarness
    from tests.ui.support import dashboard_on, service_account_token

    harness = ApiServerHarness(Path(tempfile.mkdtemp(prefix="bench-ui-")))
    await harness.start()
    client = harness.new_client()
    token = await service_account_token(client, "bench", admin=True)
    sem = asyncio.Semaphore(32)

    async def create(i: int) -> None:
        body = json.loads(json.dumps(POD))
        body["metadata"]["name"] = f"bench-{i:04d}"
        async with sem:
            await client.request("POST", "/api/v1/namespaces/default/pods", body=body)

    await asyncio.gather(*(create(i) for i in range(pods)))
    dashboard = await dashboard_on(harness)
    print(json.dumps({"url": f"https://127.0.0.1:{dashboard.port}", "token": token}), flush=True)
    await asyncio.Event().wait()


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu(pid: int, seconds: float) -> float:
    """Percent of one core used by ``pid`` over ``seconds`` of wall time."""
    start_cpu, start = cpu_s(pid), time.monotonic()
    time.sleep(seconds)
    return 100 * (cpu_s(pid) - start_cpu) / (time.monotonic() - start)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ui")
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--tabs", type=int, default=4)
    parser.add_argument("--idle-s", type=float, default=60.0)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.pods))
        return

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    from tests.ui.browser import chrome

    child = subprocess.Popen(
        [sys.executable, "-m", "bench.ui", "--serve", "--pods", str(args.pods)],
        stdout=subprocess.PIPE,
        text=True,
    )
    driver = None
    try:
        assert child.stdout is not None
        info = json.loads(child.stdout.readline())
        pods_url = info["url"] + "/dashboard/c/local/k/pods?ns=default"
        driver = chrome()
        wait = WebDriverWait(driver, 120)
        driver.get(info["url"] + "/dashboard/login")
        driver.find_element(By.ID, "secret").send_keys(info["token"])
        driver.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
        wait.until(lambda d: "/k/pods" in d.current_url)

        fcp, dcl, sizes = [], [], []
        for _ in range(5):
            driver.get(pods_url)
            wait.until(
                lambda d: (
                    d.execute_script(
                        "return document.querySelectorAll('table.live tbody tr').length"
                    )
                    == args.pods
                )
            )
            # The paint entry is queued asynchronously: wait until the browser reports it.
            WebDriverWait(driver, 10).until(
                lambda d: d.execute_script(
                    "return performance.getEntriesByName('first-contentful-paint').length"
                )
            )
            timing = driver.execute_script(
                "const n = performance.getEntriesByType('navigation')[0];"
                "const p = performance.getEntriesByName('first-contentful-paint')[0];"
                "return [p ? p.startTime : null, n.domContentLoadedEventEnd,"
                " n.transferSize || n.encodedBodySize];"
            )
            fcp.append(timing[0])
            dcl.append(timing[1])
            sizes.append(timing[2])
        # The tabs: the first window plus --tabs - 1 more, each live on the pods page.
        wait.until(
            lambda d: (
                d.find_element(By.CSS_SELECTOR, "table.live").get_attribute("data-live") == "1"
            )
        )
        driver.get("about:blank")  # no tab on the UI for the baseline
        time.sleep(2)
        baseline = idle_cpu(child.pid, args.idle_s)
        handles = []
        for i in range(args.tabs):
            if i:
                driver.switch_to.new_window("tab")
            driver.get(pods_url)
            wait.until(
                lambda d: (
                    d.find_element(By.CSS_SELECTOR, "table.live").get_attribute("data-live") == "1"
                )
            )
            handles.append(driver.current_window_handle)
        time.sleep(2)
        with_tabs = idle_cpu(child.pid, args.idle_s)
        per_tab = (with_tabs - baseline) / args.tabs
        print(f"pods page, {args.pods} pods (server-rendered), median of 5 loads:")
        print(f"  first contentful paint      {statistics.median(fcp):8.0f} ms")
        print(f"  all rows (DOMContentLoaded) {statistics.median(dcl):8.0f} ms")
        print(f"  page size                   {statistics.median(sizes) / 1024:8.0f} KiB")
        print(f"server CPU while idle ({args.idle_s:.0f} s each, API server + dashboard):")
        print(f"  no tab (baseline)           {baseline:8.3f} % of a core")
        print(f"  {args.tabs} tabs live on the pods page {with_tabs:6.3f} % of a core")
        verdict = "ok" if per_tab < 0.5 else "OVER GOAL"
        print(f"  per open tab                {per_tab:8.3f} % of a core (goal < 0.5: {verdict})")
    finally:
        if driver is not None:
            driver.quit()
        child.terminate()
        child.wait(timeout=30)


if __name__ == "__main__":
    main()
