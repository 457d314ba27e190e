"""``stem-explorer lab`` for real (headless): the login token stays with its user."""

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from other_user import other_user  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

#: `ps -eo pid,args` in Python: every process's command line, as any user may read it.
PS = """
import os
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        print(pid, open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\\0", b" ").decode(errors="replace"))
    except OSError:  # gone meanwhile
        pass
"""


@pytest.fixture
def lab(tmp_path):
    """A running ``stem-explorer lab`` (no browser): its process and the URL it printed."""
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    env.pop("JUPYTER_TOKEN", None)
    command = [sys.executable, "-m", "stem_explorer", "lab", "--dir", str(tmp_path / "sample"),
               "--nav-shape", "8", "8", "--sig-shape", "16", "16", "--port", "0"]
    with open(tmp_path / "lab.log", "w") as log:
        process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        url = None
        deadline = time.monotonic() + 240
        while url is None and time.monotonic() < deadline and process.poll() is None:
            line = process.stdout.readline()
            url = re.search(r"http://127\.0\.0\.1:\d+/lab/tree/\S+\?token=(\w+)", line)
        assert url, f"no URL printed; its log:\n{(tmp_path / 'lab.log').read_text()[-3000:]}"
        yield process, url.group(0), url.group(1)
    finally:
        process.send_signal(signal.SIGTERM)  # stops its Jupyter server too
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_lab_token_is_not_on_any_command_line(lab, other_user):  # noqa: F811
    process, url, token = lab
    servers = psutil.Process(process.pid).children(recursive=True)
    assert servers, "the Jupyter server is not a child of `stem-explorer lab`"
    for server in [psutil.Process(process.pid), *servers]:
        assert token not in Path(f"/proc/{server.pid}/cmdline").read_bytes().decode(errors="replace")
    # the server has it, by environment, and takes it
    assert any(s.environ().get("JUPYTER_TOKEN") == token for s in servers)
    base = url.split("/lab/")[0]
    with urllib.request.urlopen(f"{base}/api/contents?token={token}", timeout=30) as answer:
        assert answer.status == 200
    with pytest.raises(urllib.error.HTTPError, match="403"):
        urllib.request.urlopen(f"{base}/api/contents", timeout=30)
    # what another user sees: every command line (what `ps` shows), no environment
    looked = other_user.run([other_user.python, "-c", PS])
    assert looked.returncode == 0 and f"{servers[0].pid} " in looked.stdout
    assert token not in looked.stdout
    environ = other_user.run(["cat", f"/proc/{servers[0].pid}/environ"])
    assert environ.returncode != 0 and token not in environ.stdout
