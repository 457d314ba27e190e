"""A JupyterHub with a dask-gateway on 127.0.0.1, as a site runs them, for the hub tests.

- JupyterHub (PyPI ``jupyterhub``) behind ``configurable-http-proxy`` (npm, installed into
  ``.venv/bin`` by ``scripts/setup.sh``), logging users in with PAM (the hub's default
  authenticator) and starting their servers with the ``LocalProcessSpawner``, which runs
  each server as its OS user. The two users are real OS users made with ``useradd``
  (each with a password set through ``chpasswd``'s standard input), so that user 2's
  processes cannot read user 1's files, kernels or cluster credentials: what a shared
  password or a root-run spawner would not show.
- dask-gateway-server (PyPI ``dask-gateway-server``) with its local-process backend (it
  starts each cluster's scheduler and workers as the requesting OS user) and the
  ``jupyterhub`` authenticator: a hub service named ``dask-gateway`` whose API token the
  hub and the gateway read from their environment; users hold the
  ``access:services!service=dask-gateway`` scope, and their servers' tokens too.

Secrets never appear on a command line: the hub's service tokens and the gateway's
token are in the processes' environment, the config files are 0600. All processes run
in their own process group and are stopped by PID.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from stem_explorer.browser_testing import free_port

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
PROXY = VENV_BIN / "configurable-http-proxy"
START_TIMEOUT = 60.0

HUB_CONFIG = """\
import os
c = get_config()  # noqa: F821
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.command = [{proxy!r}]
c.JupyterHub.db_url = "sqlite:///{work}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{work}/cookie_secret"
c.JupyterHub.pid_file = "{work}/jupyterhub.pid"
c.JupyterHub.authenticator_class = "pam"
c.Authenticator.allowed_users = {users!r}
c.JupyterHub.spawner_class = "localprocess"
c.Spawner.cmd = [{python!r}, "-m", "jupyterhub.singleuser"]
c.Spawner.default_url = "/lab"
c.Spawner.args = ["--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
c.Spawner.start_timeout = 60
c.Spawner.http_timeout = 60
c.Spawner.environment = {environment!r}
# the servers' own API token may use the gateway (what the notebook's kernel holds)
c.Spawner.server_token_scopes = ["users:activity!user", "access:services!service=dask-gateway"]
c.JupyterHub.services = [
    {{"name": "dask-gateway", "api_token": os.environ["SE_GATEWAY_SERVICE_TOKEN"]}},
    {{"name": "stem-tests", "api_token": os.environ["SE_TESTS_SERVICE_TOKEN"]}},
]
c.JupyterHub.load_roles = [
    {{"name": "user", "scopes": ["self", "access:services!service=dask-gateway"]}},
    # the tests' service starts servers and issues user tokens (as an admin would)
    {{"name": "stem-tests", "services": ["stem-tests"],
      "scopes": ["admin:users", "admin:servers", "tokens", "access:services!service=dask-gateway",
                 "access:servers"]}},
]
"""

GATEWAY_CONFIG = """\
import os
from dask_gateway_server.backends.local import LocalBackend, getpwnam
from dask_gateway_server.options import Float, Integer, Options


class OwnedFolderLocalBackend(LocalBackend):
    \"\"\"The local-process backend, with each cluster's folder made and given to its user
    here: dask-gateway-server 2026.3's own ``setup_working_directory`` hands chown the
    characters of the certificates' paths (``paths.extend(path)``), the first being "/",
    so run as root it gives the file system's root to the user, then fails.\"\"\"

    def setup_working_directory(self, cluster):
        workdir = os.path.join(self.clusters_directory, cluster.name)
        user = getpwnam(cluster.username)
        for folder in (workdir, self.get_certs_directory(workdir), self.get_logs_directory(workdir)):
            os.makedirs(folder, 0o700)
            os.chown(folder, user.pw_uid, user.pw_gid)
        for path, data in zip(self._get_tls_paths(workdir), (cluster.tls_cert, cluster.tls_key)):
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                f.write(data)
            os.chown(path, user.pw_uid, user.pw_gid)
        return workdir


c = get_config()  # noqa: F821
c.DaskGateway.address = "127.0.0.1:{api_port}"
c.Proxy.address = "127.0.0.1:{port}"
c.DaskGateway.backend_class = OwnedFolderLocalBackend
c.LocalBackend.clusters_directory = "{work}/clusters"
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.JupyterHubAuthenticator"
c.JupyterHubAuthenticator.jupyterhub_api_url = "http://127.0.0.1:{hub_port}/hub/api"
c.JupyterHubAuthenticator.jupyterhub_service_name = "dask-gateway"
c.ClusterConfig.scheduler_cmd = {scheduler!r}
c.ClusterConfig.worker_cmd = {worker!r}
c.ClusterConfig.cluster_max_workers = 4
c.ClusterConfig.idle_timeout = 600
c.ClusterConfig.environment = {environment!r}
# the daskhub convention: users choose workers' memory (GiB) and cores in a range
c.Backend.cluster_options = Options(
    Integer("worker_cores", default=1, min=1, max=2, label="Worker cores"),
    Float("worker_memory", default=1, min=0.5, max=2, label="Worker memory (GiB)"),
    handler=lambda options: {{"worker_cores": options.worker_cores,
                              "worker_memory": int(options.worker_memory * 2**30)}},
)
"""


@dataclass
class HubUser:
    """A real OS user with a hub login; ``home`` holds the notebooks and the sample."""

    name: str
    password: str
    uid: int
    gid: int
    home: Path


@dataclass
class HubStack:
    """The running hub and gateway. ``url`` is the hub's public address."""

    url: str
    gateway_url: str
    work: Path
    users: list
    tests_token: str
    processes: list
    data: Path = None  # the sample all users open

    def api(self, method: str, path: str, body=None, token=None, timeout: float = 30.0):
        """(status, JSON body) of a hub API request (default: as the tests' admin service)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}/hub/api{path}", data=data, method=method,
                                         headers={"Authorization": f"token {token or self.tests_token}"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                text = response.read()
                return response.status, json.loads(text) if text else None
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")[:500]

    def user_token(self, user: HubUser, scopes: list) -> str:
        """A new API token of ``user`` with ``scopes`` (issued by the admin service)."""
        status, body = self.api("POST", f"/users/{user.name}/tokens", {"scopes": scopes, "note": "stem tests"})
        assert status == 201, (status, body)
        return body["token"]

    def start_server(self, user: HubUser, timeout: float = 90.0) -> None:
        """Start ``user``'s single-user server through the hub and wait until it is ready."""
        status, body = self.api("POST", f"/users/{user.name}/server")
        assert status in (201, 202, 400), (status, body)  # 400: already running
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = self.api("GET", f"/users/{user.name}")
            server = (body.get("servers") or {}).get("", {}) if status == 200 else {}
            if server.get("ready"):
                return
            time.sleep(0.3)
        raise AssertionError(f"the hub did not start {user.name}'s server within {timeout:g} s:\n{self.logs()}")

    def logs(self) -> str:
        """What the hub (with the users' servers and kernels) and the gateway logged about
        kernels, clusters and errors, for failure messages."""
        return "\n".join(f"--- {p.name}:\n" + "\n".join(_notable(p.read_text(errors="replace"))[-60:])
                         for p in sorted(self.work.glob("*.log")))


def _notable(log: str) -> list:
    words = ("kernel", "restart", "error", "traceback", "died", "signal", "cluster", "warn")
    return [line for line in log.splitlines() if "ConfigProxy" not in line and any(w in line.lower() for w in words)]


def _wait_http(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:  # 200 only: the hub's proxy answers 404 until the hub has added its routes
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:g} s:\n{log.read_text()[-4000:]}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _make_user(prefix: str) -> HubUser:
    name = f"{prefix}{uuid.uuid4().hex[:6]}"
    home = Path(tempfile.mkdtemp(prefix=f"{name}-home-"))
    subprocess.run(["useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/bin/bash", name],
                   check=True, capture_output=True)
    password = secrets.token_urlsafe(16)
    subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True, capture_output=True)
    entry = pwd.getpwnam(name)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    return HubUser(name, password, entry.pw_uid, entry.pw_gid, home)


def _remove_user(user: HubUser) -> None:
    import psutil

    for process in psutil.process_iter(["uids"]):  # what the fixture's user left running, by PID
        if process.info["uids"] and process.info["uids"].real == user.uid:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
    subprocess.run(["userdel", user.name], capture_output=True)
    shutil.rmtree(user.home, ignore_errors=True)


def _users_python(folder: Path) -> Path:
    """A Python the hub's users may run, with the test environment's packages.

    The test venv's interpreter may sit where only root can enter (pyenv under
    /root), so the users get a venv of the system's interpreter of the same version
    whose site-packages adds the test venv's (its .pth files too: the editable
    install of this checkout)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    system = shutil.which(version, path="/usr/local/bin:/usr/bin:/bin")
    if system is None:
        pytest.skip(f"the hub's users need a system {version} (the test venv's may not be theirs to run)")
    subprocess.run([system, "-m", "venv", "--without-pip", str(folder)], check=True, capture_output=True)
    site = subprocess.run([str(folder / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    tests_site = sysconfig.get_paths()["purelib"]
    Path(site, "stem_explorer_tests.pth").write_text(f"import site; site.addsitedir({tests_site!r})\n")
    return folder / "bin" / "python"


def _skip_unless_ready() -> None:
    if os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("chpasswd"):
        pytest.skip("the hub stack needs root, useradd and chpasswd (real OS users for the spawner)")
    if not PROXY.exists():
        pytest.skip(f"the hub stack needs configurable-http-proxy at {PROXY}: run bash scripts/setup.sh")
    for module in ("jupyterhub", "dask_gateway_server", "dask_gateway"):
        pytest.importorskip(module, reason="the hub stack needs the test extra: pip install -e '.[test]'")


def start_hub_stack(work: Path, user_environment: dict, n_users: int = 2) -> HubStack:
    """Users, hub and gateway; the caller stops them with :func:`stop_hub_stack`."""
    _skip_unless_ready()
    work.chmod(0o711)  # the users' processes enter the cluster folders below it, nothing more
    (work / "clusters").mkdir(mode=0o711)
    users = []
    processes = []
    stack = None
    try:
        users = [_make_user(f"stxh{i + 1}") for i in range(n_users)]
        port, hub_port, proxy_api_port = free_port(), free_port(), free_port()
        gw_port, gw_api_port = free_port(), free_port()
        gateway_url = f"http://127.0.0.1:{gw_port}"
        gateway_token, tests_token = secrets.token_hex(32), secrets.token_hex(32)
        python = _users_python(work / "users-venv")
        path = f"{python.parent}:/usr/local/bin:/usr/bin:/bin"
        environment = {
            "PATH": path,
            # the test environment's JupyterLab, its server and lab extensions, kernel spec
            "JUPYTER_CONFIG_PATH": str(VENV_BIN.parent / "etc" / "jupyter"),
            "JUPYTER_PATH": str(VENV_BIN.parent / "share" / "jupyter"),
            "JUPYTERLAB_DIR": str(VENV_BIN.parent / "share" / "jupyter" / "lab"),
            "DASK_GATEWAY__ADDRESS": gateway_url,
            "DASK_GATEWAY__AUTH__TYPE": "jupyterhub",
            **user_environment,
        }
        _write_private(work / "jupyterhub_config.py", HUB_CONFIG.format(
            port=port, hub_port=hub_port, proxy_api_port=proxy_api_port, proxy=str(PROXY), work=work,
            users={u.name for u in users}, python=str(python),
            environment=environment))
        _write_private(work / "dask_gateway_config.py", GATEWAY_CONFIG.format(
            api_port=gw_api_port, port=gw_port, work=work, hub_port=port,
            scheduler=[str(python), "-m", "distributed.cli.dask_scheduler"],
            worker=[str(python), "-m", "distributed.cli.dask_worker"],
            environment={"PATH": path, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}))
        base_env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(work)}
        hub_log = work / "jupyterhub.log"
        hub = subprocess.Popen(
            [str(VENV_BIN / "jupyterhub"), "-f", str(work / "jupyterhub_config.py")], cwd=work,
            env={**base_env, "SE_GATEWAY_SERVICE_TOKEN": gateway_token, "SE_TESTS_SERVICE_TOKEN": tests_token},
            stdout=hub_log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        processes.append(hub)
        gw_log = work / "dask-gateway.log"
        gateway = subprocess.Popen(
            [str(VENV_BIN / "dask-gateway-server"), "-f", str(work / "dask_gateway_config.py")], cwd=work,
            env={**base_env, "JUPYTERHUB_API_TOKEN": gateway_token},
            stdout=gw_log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        processes.append(gateway)
        stack = HubStack(f"http://127.0.0.1:{port}", gateway_url, work, users, tests_token, processes)
        _wait_http(f"{stack.url}/hub/api/", hub, hub_log, START_TIMEOUT)
        _wait_http(f"{gateway_url}/api/health", gateway, gw_log, START_TIMEOUT)
        return stack
    except BaseException:
        stop_hub_stack(processes, users)
        raise


def stop_hub_stack(processes: list, users: list) -> None:
    """Stop the hub (it stops the users' servers) and the gateway (it stops its
    clusters), then remove the users with whatever they left running."""
    for process in processes:
        _stop(process)
    for user in users:
        _remove_user(user)


#: The sample every hub user opens: small, so the explorer's jobs take a moment.
SAMPLE_NAV, SAMPLE_SIG = (24, 32), (48, 40)


@pytest.fixture(scope="session")
def hub():
    """The running stack, with a small sample all users may read (``STEM_EXPLORER_DATA``
    in their servers) and the explorer notebook in each user's home."""
    from stem_explorer.sample import make_sample

    # not under pytest's tmp_path: its root is 0700, and the users must enter this folder
    work = Path(tempfile.mkdtemp(prefix="stem-explorer-hub-"))
    shared = work / "data"
    shared.mkdir(mode=0o755)
    data = make_sample(shared / "hub_sample.h5", nav_shape=SAMPLE_NAV, sig_shape=SAMPLE_SIG)
    data.chmod(0o644)
    stack = start_hub_stack(work, {"STEM_EXPLORER_DATA": str(data), "STEM_EXPLORER_CLUSTER": "gateway"})
    stack.data = data
    for user in stack.users:
        notebook = user.home / "explorer.ipynb"
        shutil.copy(ROOT / "notebooks" / "explorer.ipynb", notebook)
        os.chown(notebook, user.uid, user.gid)
    yield stack
    stop_hub_stack(stack.processes, stack.users)
    shutil.rmtree(work, ignore_errors=True)
