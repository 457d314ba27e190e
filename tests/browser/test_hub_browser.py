"""The explorer on JupyterHub with dask-gateway (tests/hub_stack.py), in Chromium.

User 1 logs in to the hub with a password (PAM, a real OS user), the hub starts the
user's JupyterLab as that user, the explorer notebook runs with the cluster from the
gateway (the hub's spawner sets ``STEM_EXPLORER_CLUSTER=gateway`` and the gateway's
address), a disk drawn with the mouse gives a virtual image equal to numpy, computed
by gateway workers running as user 1, and the explorer's dashboard link opens the
dask dashboard through the gateway's proxy. User 2, logged in, is refused at user 1's
server.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from conftest import ARTIFACTS, load_json
from hub_stack import SAMPLE_SIG
from test_explorer_browser import draw_disk_and_check

from stem_explorer.browser_testing import kernel_client, launch_browser, run_in_kernel, run_notebook

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.cluster]


@dataclass
class UserServer:
    """A user's JupyterLab behind the hub, as ``run_notebook`` addresses a server."""

    base: str
    kind: str = "lab"

    def url(self, path: str) -> str:
        return f"{self.base}/{path.lstrip('/')}"


def log_in(context, hub, user, then: str = ""):
    """Log in with the hub's form; by default the hub then starts the user's server."""
    page = context.new_page()
    page.goto(f"{hub.url}/hub/login" + (f"?next={then}" if then else ""))
    page.fill("#username_input", user.name)
    page.fill("#password_input", user.password)
    page.click("#login_submit")
    page.wait_for_url(f"{hub.url}{then or f'/user/{user.name}/'}**", timeout=90_000)
    return page


def test_explorer_on_the_hub(hub, playwright_instance, tmp_path):
    user1, user2 = hub.users
    context1 = launch_browser(playwright_instance, tmp_path / "profile-1")
    client = None
    try:
        page = log_in(context1, hub, user1)
        run_notebook(page, UserServer(f"{hub.url}/user/{user1.name}"))
        try:
            page.wait_for_selector(".se-mask-editor[data-image-ready='1']", timeout=120_000)
        except Exception as exc:  # the user's server and kernel log to the hub's log
            raise AssertionError(f"the explorer did not show the sum frame:\n{hub.logs()}") from exc
        client = kernel_client(user1.home / ".local/share/jupyter/runtime")

        def run(code, timeout=120.0):
            return run_in_kernel(client, code, timeout)

        run("explorer.wait()")
        cluster = load_json(run(
            "import json, os\n"
            "print(json.dumps({'gateway': explorer.session._gateway is not None,\n"
            "                  'uids': sorted(set(explorer.session.client.run(os.getuid).values()))}))"))
        assert cluster == {"gateway": True, "uids": [user1.uid]}, cluster
        draw_disk_and_check(page, run, SAMPLE_SIG)
        page.screenshot(path=str(ARTIFACTS / "hub-disk-drawn.png"))

        link = page.locator(".se-explorer a", has_text="dask dashboard")
        href = link.get_attribute("href")
        assert href.startswith(f"{hub.gateway_url}/clusters/"), href
        with context1.expect_page() as opened:
            link.click()
        dashboard = opened.value
        dashboard.wait_for_load_state()
        dashboard.wait_for_function("() => document.title.includes('Dask')", timeout=30_000)
        dashboard.wait_for_selector("canvas", timeout=30_000)  # bokeh drew its plots
        dashboard.screenshot(path=str(ARTIFACTS / "hub-dashboard.png"))

        context2 = launch_browser(playwright_instance, tmp_path / "profile-2")
        try:
            other = log_in(context2, hub, user2, then="/hub/home")  # logged in, no server of their own
            response = other.goto(f"{hub.url}/user/{user1.name}/lab")
            assert response.status == 403, (response.status, response.url)
        finally:
            context2.close()
        run("explorer.close()")
    finally:
        for shown in context1.pages:  # the last state, for failures
            shown.screenshot(path=str(ARTIFACTS / f"hub-last-{context1.pages.index(shown)}.png"))
        if client is not None:
            client.stop_channels()
        context1.close()
        for user in hub.users:
            hub.api("DELETE", f"/users/{user.name}/server")
