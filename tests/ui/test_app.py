"""The UI server against a real API server: login and sessions, CSRF, escaping, server-side
apply errors, RBAC denials and live lists (the browser tests drive the same pages)."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest

from sampan.ui.sessions import COOKIE
from tests.ui.conftest import Browser
from tests.ui.support import service_account_token

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "web-1",
        "labels": {"app": "web"},
        "annotations": {"note": "<script>alert(1)</script>"},
    },
    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
}


async def _pod(client: Any, name: str = "web-1", **meta: Any) -> dict[str, Any]:
    body = json.loads(json.dumps(POD))
    body["metadata"]["name"] = name
    body["metadata"].update(meta)
    return await client.request("POST", "/api/v1/namespaces/default/pods", body=body)


def _csrf_header(html: str) -> str:
    match = re.search(r"hx-headers='\{\"X-CSRF-Token\": \"([^\"]+)\"\}'", html)
    assert match, html[:400]
    return match.group(1)


async def test_login_sets_a_strict_session_cookie_and_never_shows_the_token(
    browser: Browser, admin_token: str
) -> None:
    response = await browser.login(admin_token)
    cookie = response.cookies[COOKIE]
    assert cookie["secure"] and cookie["httponly"]
    assert cookie["samesite"] == "Strict"
    assert cookie["path"] == "/dashboard"
    assert admin_token not in cookie.value
    status, html, _ = await browser.get("/dashboard/c/local/k/pods")
    assert status == 200
    assert "system:serviceaccount:kube-system:ui-admin" in html
    assert admin_token not in html


async def test_a_wrong_token_is_refused_with_the_api_servers_reason(browser: Browser) -> None:
    _, html, _ = await browser.get("/dashboard/login")
    status, html, _ = await browser.post(
        "/dashboard/login", data={"csrf_token": browser.csrf(html), "secret": "not-a-token"}
    )
    assert status == 401
    assert "refused this token" in html
    assert COOKIE not in {c.key for c in browser.jar}


async def test_login_needs_the_login_forms_token(browser: Browser, admin_token: str) -> None:
    status, _, _ = await browser.post(
        "/dashboard/login", data={"csrf_token": "forged", "secret": admin_token}
    )
    assert status == 403
    assert COOKIE not in {c.key for c in browser.jar}


async def test_without_a_session_pages_redirect_to_login(browser: Browser) -> None:
    status, _, response = await browser.get("/dashboard/c/local/k/pods")
    assert status == 302
    assert response.headers["Location"] == "/dashboard/login"
    status, _, response = await browser.get(
        "/dashboard/c/local/k/pods", headers={"HX-Request": "true"}
    )
    assert response.headers["HX-Redirect"] == "/dashboard/login"


async def test_an_expired_session_redirects_to_login(
    browser: Browser, admin_token: str, dashboard: Any
) -> None:
    await browser.login(admin_token)
    assert (await browser.get("/dashboard/c/local/k/pods"))[0] == 200
    dashboard.ui.sessions.idle_ttl_s = 0
    status, _, response = await browser.get("/dashboard/c/local/k/pods")
    assert status == 302
    assert response.headers["Location"] == "/dashboard/login"


async def test_state_changes_need_the_csrf_token_and_our_origin(
    browser: Browser, admin_token: str, client: Any
) -> None:
    await _pod(client)
    await browser.login(admin_token)
    _, html, _ = await browser.get("/dashboard/c/local/k/pods/default/web-1")
    token = _csrf_header(html)
    path = "/dashboard/c/local/k/pods/default/web-1/delete"
    status, text, _ = await browser.post(path)
    assert status == 403 and "CSRF" in text
    status, _, _ = await browser.post(path, headers={"X-CSRF-Token": "x" + token})
    assert status == 403
    status, _, _ = await browser.post(
        path, headers={"X-CSRF-Token": token, "Origin": "https://evil.example"}
    )
    assert status == 403
    await client.request("GET", "/api/v1/namespaces/default/pods/web-1")  # still there
    status, text, _ = await browser.post(path, headers={"X-CSRF-Token": token})
    assert status == 200 and "Deleted web-1" in text


async def test_logout_ends_the_session(browser: Browser, admin_token: str) -> None:
    await browser.login(admin_token)
    _, html, _ = await browser.get("/dashboard/c/local/k/pods")
    status, _, response = await browser.post(
        "/dashboard/logout", data={"csrf_token": browser.csrf(html)}
    )
    assert status == 302 and response.headers["Location"] == "/dashboard/login"
    assert (await browser.get("/dashboard/c/local/k/pods"))[0] == 302


async def test_html_in_objects_is_escaped(browser: Browser, admin_token: str, client: Any) -> None:
    await _pod(client)
    await client.request(
        "POST",
        "/api/v1/namespaces/default/events",
        body={
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": "e1"},
            "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "default"},
            "reason": "Test",
            "type": "Warning",
            "message": "<img src=x onerror=alert(1)>",
        },
    )
    await browser.login(admin_token)
    _, html, _ = await browser.get("/dashboard/c/local/k/pods/default/web-1")
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    _, html, _ = await browser.get("/dashboard/c/local/k/events")
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


async def test_apply_reports_malformed_yaml_with_its_line(
    browser: Browser, admin_token: str, client: Any
) -> None:
    await client.request(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        body={
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cfg"},
            "data": {"a": "1"},
        },
    )
    await browser.login(admin_token)
    _, html, _ = await browser.get("/dashboard/c/local/k/configmaps/default/cfg")
    headers = {"X-CSRF-Token": _csrf_header(html)}
    path = "/dashboard/c/local/k/configmaps/default/cfg/apply"
    bad = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata: [a: 1\n"
    status, text, _ = await browser.post(path, data={"yaml": bad}, headers=headers)
    assert status == 422
    assert "Malformed YAML: line 6" in text
    good = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n  namespace: default\n"
        "data:\n  a: '2'\n"
    )
    # data.a belongs to the client that created it: a conflict, as the API server words it.
    status, text, _ = await browser.post(path, data={"yaml": good}, headers=headers)
    assert status == 409
    assert "Apply failed with 1 conflict: conflict with &#34;sampan&#34;" in text
    assert ".data.a" in text
    status, text, _ = await browser.post(path, data={"yaml": good, "force": "1"}, headers=headers)
    assert status == 200, text
    cm = await client.request("GET", "/api/v1/namespaces/default/configmaps/cfg")
    assert cm["data"] == {"a": "2"}


async def test_apply_shows_the_servers_error_inline(
    browser: Browser, admin_token: str, client: Any
) -> None:
    await _pod(client)
    await browser.login(admin_token)
    _, html, _ = await browser.get("/dashboard/c/local/k/pods/default/web-1")
    doc = (
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web-1\n  namespace: default\n"
        "spec:\n  containers:\n  - name: c\n    image: busybox\n    ports:\n"
        "    - containerPort: 99999\n"
    )
    status, text, _ = await browser.post(
        "/dashboard/c/local/k/pods/default/web-1/apply",
        data={"yaml": doc},
        headers={"X-CSRF-Token": _csrf_header(html)},
    )
    assert status == 422
    assert "containerPort" in text and 'class="error"' in text


async def test_rbac_denials_show_the_servers_message(browser: Browser, client: Any) -> None:
    token = await service_account_token(client, "nobody", admin=False)
    await browser.login(token)
    status, html, _ = await browser.get("/dashboard/c/local/k/pods")
    assert status == 403
    assert (
        "pods is forbidden: User &#34;system:serviceaccount:kube-system:nobody&#34; "
        "cannot list resource &#34;pods&#34;" in html
    )


async def test_secret_values_are_hidden_until_asked(
    browser: Browser, admin_token: str, client: Any
) -> None:
    await client.request(
        "POST",
        "/api/v1/namespaces/default/secrets",
        body={
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s"},
            "stringData": {"password": "hunter2"},
        },
    )
    await browser.login(admin_token)
    _, html, _ = await browser.get("/dashboard/c/local/k/secrets/default/s")
    assert "hunter2" not in html and "aHVudGVyMg==" not in html
    _, html, _ = await browser.get("/dashboard/c/local/k/secrets/default/s/reveal")
    assert "hunter2" in html


async def test_scale_and_lists_update_live_from_a_watch(
    browser: Browser, admin_token: str, client: Any
) -> None:
    await browser.login(admin_token)
    status, html, _ = await browser.get("/dashboard/c/local/k/pods?ns=default")
    assert status == 200
    watch = re.search(r'data-watch="([^"]+)"', html)
    assert watch
    url = watch.group(1).replace("&amp;", "&")
    async with browser.session.get(browser.base + url) as stream:
        assert stream.headers["Content-Type"] == "text/event-stream"
        await _pod(client, "web-2")
        data = ""
        async with asyncio.timeout(30):
            async for line in stream.content:
                text = line.decode()
                if text.startswith("data: "):
                    data = text[6:]
                    break
    event = json.loads(data)
    assert event["op"] == "upsert"
    assert 'href="/dashboard/c/local/k/pods/default/web-2"' in event["html"]
    assert "&lt;script&gt;" not in event["html"]  # annotations are not columns


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/c/local/k/nodes",
        "/dashboard/c/local/k/events",
        "/dashboard/c/local/k/deployments",
        "/dashboard/c/local/k/customresourcedefinitions",
    ],
)
async def test_every_list_page_renders(browser: Browser, admin_token: str, path: str) -> None:
    await browser.login(admin_token)
    status, html, _ = await browser.get(path)
    assert status == 200, html[:500]


async def test_custom_resources_are_listed_through_their_crd(
    browser: Browser, admin_token: str, client: Any
) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }
    await client.request(
        "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", body=crd
    )
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"}}
    for _ in range(50):  # the CRD is served once Established
        try:
            await client.request(
                "POST", "/apis/example.com/v1/namespaces/default/widgets", body=widget
            )
            break
        except Exception:
            await asyncio.sleep(0.2)
    await browser.login(admin_token)
    status, html, _ = await browser.get("/dashboard/c/local/k/customresourcedefinitions")
    assert status == 200 and "widgets.example.com" in html
    status, html, _ = await browser.get("/dashboard/c/local/k/widgets.example.com")
    assert status == 200, html[:300]
    assert 'href="/dashboard/c/local/k/widgets.example.com/default/w1"' in html
    status, html, _ = await browser.get("/dashboard/c/local/k/widgets.example.com/default/w1")
    assert status == 200 and "kind: Widget" in html
    status, html, _ = await browser.get("/dashboard/c/local/k/nosuch.example.com")
    assert status == 404


async def test_a_node_shows_its_conditions_and_pods(
    browser: Browser, admin_token: str, client: Any
) -> None:
    await client.request(
        "POST",
        "/api/v1/nodes",
        body={
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "n1"},
            "status": {
                "capacity": {"cpu": "2", "pods": "110"},
                "conditions": [
                    {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ok"}
                ],
            },
        },
    )
    body = json.loads(json.dumps(POD))
    body["spec"]["nodeName"] = "n1"
    await client.request("POST", "/api/v1/namespaces/default/pods", body=body)
    await browser.login(admin_token)
    status, html, _ = await browser.get("/dashboard/c/local/k/nodes/-/n1")
    assert status == 200, html[:300]
    assert "KubeletReady" in html
    assert 'href="/dashboard/c/local/k/pods/default/web-1"' in html


async def test_a_cronjob_shows_its_jobs(browser: Browser, admin_token: str, client: Any) -> None:
    template = {
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}
    }
    cron = await client.request(
        "POST",
        "/apis/batch/v1/namespaces/default/cronjobs",
        body={
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": "nightly"},
            "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": template}}},
        },
    )
    owner = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "name": "nightly",
        "uid": cron["metadata"]["uid"],
        "controller": True,
    }
    for name, refs in (("nightly-1", [owner]), ("unrelated", [])):
        await client.request(
            "POST",
            "/apis/batch/v1/namespaces/default/jobs",
            body={
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": name, "ownerReferences": refs},
                "spec": {"template": template},
            },
        )
    await browser.login(admin_token)
    status, html, _ = await browser.get("/dashboard/c/local/k/cronjobs/default/nightly")
    assert status == 200, html[:300]
    assert 'href="/dashboard/c/local/k/jobs/default/nightly-1"' in html
    assert "/jobs/default/unrelated" not in html


async def test_scale_and_rollout_restart(browser: Browser, admin_token: str, client: Any) -> None:
    labels = {"app": "web"}
    await client.request(
        "POST",
        "/apis/apps/v1/namespaces/default/deployments",
        body={
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
                },
            },
        },
    )
    await browser.login(admin_token)
    _, html, _ = await browser.get("/dashboard/c/local/k/deployments/default/web")
    headers = {"X-CSRF-Token": _csrf_header(html)}
    base = "/dashboard/c/local/k/deployments/default/web"
    status, text, _ = await browser.post(base + "/scale", data={"replicas": "-1"}, headers=headers)
    assert status == 422 and "replicas" in text
    status, text, _ = await browser.post(base + "/scale", data={"replicas": "3"}, headers=headers)
    assert status == 200 and "Scaled web to 3" in text
    status, text, _ = await browser.post(base + "/restart", headers=headers)
    assert status == 200 and "Restarted web" in text
    deploy = await client.request("GET", "/apis/apps/v1/namespaces/default/deployments/web")
    assert deploy["spec"]["replicas"] == 3
    annotations = deploy["spec"]["template"]["metadata"]["annotations"]
    assert "kubectl.kubernetes.io/restartedAt" in annotations


async def test_repeated_failed_logins_are_throttled(browser: Browser, admin_token: str) -> None:
    for _ in range(10):
        _, html, _ = await browser.get("/dashboard/login")
        status, _, _ = await browser.post(
            "/dashboard/login", data={"csrf_token": browser.csrf(html), "secret": "wrong"}
        )
        assert status == 401
    _, html, _ = await browser.get("/dashboard/login")
    status, html, _ = await browser.post(
        "/dashboard/login", data={"csrf_token": browser.csrf(html), "secret": admin_token}
    )
    assert status == 429 and "Too many failed logins" in html


async def test_logs_and_shell_pages_offer_the_pods_containers(
    browser: Browser, admin_token: str, client: Any
) -> None:
    """Logs offer init containers too (their output is worth reading), the shell only the
    main ones; the first main container is chosen unless the query names one; each page
    points at its own stream; a missing pod shows the API server's 404."""
    body = json.loads(json.dumps(POD))
    body["spec"]["initContainers"] = [{"name": "setup", "image": "busybox"}]
    body["spec"]["containers"].append({"name": "side", "image": "busybox"})
    await client.request("POST", "/api/v1/namespaces/default/pods", body=body)
    await browser.login(admin_token)

    def options(html: str) -> list[str]:
        return re.findall(r"<option(?: selected)?>([^<]*)</option>", html)

    def selected(html: str) -> list[str]:
        return re.findall(r"<option selected>([^<]*)</option>", html)

    status, html, _ = await browser.get("/dashboard/c/local/logs/default/web-1")
    assert status == 200
    assert options(html) == ["setup", "c", "side"] and selected(html) == ["c"]
    assert 'of pod <a href="/dashboard/c/local/k/pods/default/web-1">web-1</a>' in html
    assert 'data-stream="/dashboard/c/local/logs/default/web-1/stream?container=c"' in html
    _, html, _ = await browser.get("/dashboard/c/local/logs/default/web-1?container=setup")
    assert selected(html) == ["setup"]
    assert 'data-stream="/dashboard/c/local/logs/default/web-1/stream?container=setup"' in html

    status, html, _ = await browser.get("/dashboard/c/local/shell/default/web-1")
    assert status == 200
    assert options(html) == ["c", "side"] and selected(html) == ["c"]
    assert 'in pod <a href="/dashboard/c/local/k/pods/default/web-1">web-1</a>' in html
    assert 'data-ws="/dashboard/c/local/shell/default/web-1/ws?container=c"' in html
    _, html, _ = await browser.get("/dashboard/c/local/shell/default/web-1?container=side")
    assert 'data-ws="/dashboard/c/local/shell/default/web-1/ws?container=side"' in html

    for page in ("logs", "shell"):
        status, html, _ = await browser.get(f"/dashboard/c/local/{page}/default/missing")
        assert status == 404
        assert "pods &#34;missing&#34; not found" in html
