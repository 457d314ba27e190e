"""A real HDFS (Hadoop 2.7.3) beside dask workers, one loopback address per node.

Node ``i`` is a DataNode and a dask worker both listening on ``127.0.0.(i+2)``, so
"the worker on the host that holds the block" means something on one machine. The
NameNode and the dask scheduler listen on 127.0.0.1. Everything runs as child
processes, stopped by PID.

Hadoop comes from PyPI's ``pyspark==2.4.8`` source distribution (``pip download``),
which bundles the Hadoop 2.7.3 jars; the needed jars are extracted once into
``~/.cache/stem_explorer/hadoop-2.7.3`` (``$STEM_EXPLORER_CACHE`` overrides
``~/.cache/stem_explorer``). Two changes make it run on Java 17: Debian's Jersey 1
replaces the bundled Jersey 2 (package ``libjersey1-*-java``), and empty ``webapps/*``
folders are put on the class path. ``BoundSocketFactory.java`` (compiled with
``javac`` into the cache) makes each DataNode's RPC come from its own address.
Daemons log to ``<dir>/logs/``.

Command line (a cluster that outlives the command, e.g. for the benchmark)::

    python scripts/hdfs/minicluster.py start --dir /tmp/hdfs-test [--nodes 3]
    python scripts/hdfs/minicluster.py stop --dir /tmp/hdfs-test

Python: ``with MiniCluster(dir, nodes=3) as mc: ...`` (see :class:`MiniCluster`).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Optional

HADOOP_VERSION = "2.7.3"
PYSPARK_SDIST = "pyspark==2.4.8"

#: Jars of the pyspark sdist (``deps/jars/``) that HDFS daemons need, by name prefix.
SDIST_JARS = (
    "hadoop-common-", "hadoop-hdfs-", "hadoop-auth-", "hadoop-annotations-",
    "guava-", "protobuf-java-", "commons-cli-", "commons-codec-", "commons-collections-",
    "commons-configuration-", "commons-io-", "commons-lang-2", "commons-logging-",
    "commons-compress-", "commons-math3-", "commons-beanutils-", "commons-digester-",
    "log4j-1", "slf4j-api-", "slf4j-log4j12-", "htrace-core-", "jetty-6", "jetty-util-6",
    "javax.servlet-api-", "jackson-core-asl-", "jackson-mapper-asl-", "jackson-jaxrs-",
    "jackson-xc-", "xmlenc-", "netty-3", "netty-all-", "xercesImpl-", "jsr305-",
    "paranamer-", "leveldbjni-all-", "httpclient-", "httpcore-", "jaxb-api-",
    "activation-", "stax-api-1.0-",
)

#: Debian's Jersey 1 (the WebHDFS servers of Hadoop 2.7 are written against it).
DEBIAN_JARS = {
    "/usr/share/java/jersey1-core.jar": "libjersey1-core-java",
    "/usr/share/java/jersey1-server.jar": "libjersey1-server-java",
    "/usr/share/java/jersey1-servlet.jar": "libjersey1-servlet-java",
    "/usr/share/java/jsr311-api.jar": "libjsr311-api-java",
}

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]

JVM_OPTIONS = ["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.net.preferIPv4Stack=true"]


class HarnessUnavailable(RuntimeError):
    """Something the harness needs (Java, a Debian package, the download) is missing."""


def cache_root() -> Path:
    """``$STEM_EXPLORER_CACHE`` or ``~/.cache/stem_explorer``."""
    base = os.environ.get("STEM_EXPLORER_CACHE")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "stem_explorer"


def _log(message: str) -> None:
    print(f"[minicluster] {message}", file=sys.stderr, flush=True)


# -- Hadoop distribution ------------------------------------------------------------------
def check_java() -> tuple[str, str]:
    """Paths of ``java`` and ``javac``; HarnessUnavailable names what is missing."""
    java, javac = shutil.which("java"), shutil.which("javac")
    if not java:
        raise HarnessUnavailable("Java is not installed (no `java` on PATH); install a JDK >= 11, e.g. openjdk-17-jdk-headless")
    if not javac:
        raise HarnessUnavailable("`javac` is missing (a JRE without the JDK); install openjdk-17-jdk-headless")
    missing = [pkg for path, pkg in DEBIAN_JARS.items() if not os.path.exists(path)]
    if missing:
        raise HarnessUnavailable(
            f"Debian packages {' '.join(missing)} are missing (Jersey 1 for Hadoop's WebHDFS); "
            f"run `bash scripts/install_debian_packages.sh` as root"
        )
    return java, javac


def prepare_hadoop(cache: Optional[Path] = None) -> Path:
    """The folder of the Hadoop jars, downloaded and extracted on first use.

    Holds ``lib/*.jar`` and ``classes/`` (``webapps/{hdfs,datanode,secondary}`` and the
    compiled :file:`BoundSocketFactory.java`); ``READY`` marks the jars complete. A
    lock file keeps two concurrent runs from preparing it twice.
    """
    _java, javac = check_java()
    home = (cache or cache_root()) / f"hadoop-{HADOOP_VERSION}"
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (home / "READY").exists():
            _extract_jars(home)
        source = HERE / "BoundSocketFactory.java"
        compiled = home / "classes" / "BoundSocketFactory.class"
        if not compiled.exists() or compiled.stat().st_mtime < source.stat().st_mtime:
            common = next((home / "lib").glob("hadoop-common-*.jar"))
            subprocess.run([javac, "-nowarn", "-cp", str(common), "-d", str(compiled.parent), str(source)],
                           check=True, capture_output=True)
    return home


def _pip(python, *args: str) -> None:
    cmd = [str(python), "-m", "pip", *args, "--disable-pip-version-check", "-q"]
    done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if done.returncode:
        raise HarnessUnavailable(f"`{' '.join(cmd)}` failed: {done.stderr.strip()[-2000:]}")


def _download_sdist(folder: Path) -> Path:
    """``pip download`` the pyspark sdist into ``folder``. pip builds its metadata with
    the old setup.py, which needs ``wheel`` and a setuptools older than 70 without
    build isolation: both go into a throwaway venv, not the project's."""
    _log(f"downloading {PYSPARK_SDIST} (sdist, about 220 MB) for its Hadoop {HADOOP_VERSION} jars")
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, stdin=subprocess.DEVNULL)
    python = venv / "bin" / "python"
    _pip(python, "install", "setuptools<70", "wheel")
    _pip(python, "download", "--no-deps", "--no-binary", ":all:", "--no-build-isolation", PYSPARK_SDIST, "-d", str(folder))
    return next(folder.glob("pyspark-*.tar.gz"))


def _extract_jars(home: Path) -> None:
    with tempfile.TemporaryDirectory(dir=home) as tmp:
        archive = _download_sdist(Path(tmp))
        lib = home / "lib"
        shutil.rmtree(lib, ignore_errors=True)
        lib.mkdir()
        found = []
        with tarfile.open(archive) as tar:
            for member in tar:
                name = member.name.rsplit("/", 1)[-1]
                if "/deps/jars/" in member.name and name.endswith(".jar") and name.startswith(SDIST_JARS):
                    with tar.extractfile(member) as src, open(lib / name, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    found.append(name)
        missing = [p for p in SDIST_JARS if not any(n.startswith(p) for n in found)]
        if missing:
            raise HarnessUnavailable(f"{archive.name} lacks the jars {missing}")
    for app in ("hdfs", "datanode", "secondary"):
        (home / "classes" / "webapps" / app).mkdir(parents=True, exist_ok=True)
    (home / "READY").write_text("\n".join(sorted(found)) + "\n")


def classpath(home: Path, conf_dir: Path) -> str:
    """Conf folder first (hdfs-site.xml, log4j.properties), then ``classes`` (the
    webapps folders, BoundSocketFactory), the jars."""
    jars = sorted(str(p) for p in (home / "lib").glob("*.jar"))
    return os.pathsep.join([str(conf_dir), str(home / "classes"), *jars, *DEBIAN_JARS])


# -- configuration --------------------------------------------------------------------------
def free_port(host: str) -> int:
    """A port free on ``host`` right now (bound, read, released)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _site_xml(properties: dict) -> str:
    rows = "".join(f"  <property><name>{k}</name><value>{v}</value></property>\n" for k, v in properties.items())
    return f"<?xml version=\"1.0\"?>\n<configuration>\n{rows}</configuration>\n"


LOG4J = """log4j.rootLogger=INFO,console
log4j.appender.console=org.apache.log4j.ConsoleAppender
log4j.appender.console.layout=org.apache.log4j.PatternLayout
log4j.appender.console.layout.ConversionPattern=%d{HH:mm:ss,SSS} %p %c{1}: %m%n
"""


def _write_conf(conf_dir: Path, core: dict, hdfs: dict) -> None:
    conf_dir.mkdir(parents=True, exist_ok=True)
    (conf_dir / "core-site.xml").write_text(_site_xml(core))
    (conf_dir / "hdfs-site.xml").write_text(_site_xml(hdfs))
    (conf_dir / "log4j.properties").write_text(LOG4J)


def _http_json(url: str, timeout: float = 2.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def _spawn(cmd: list, log: Path, env: Optional[dict] = None, cwd: Optional[Path] = None) -> int:
    """Start a child in its own session (so it is killed by PID alone); returns the PID."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd=cwd, start_new_session=True)
    return proc.pid


def _alive(pid: Optional[int]) -> bool:
    if not pid:
        return False
    try:
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:  # not our child (CLI stop): ask the kernel
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def stop_pid(pid: Optional[int], timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """Signal one process by PID and wait until it is gone (SIGKILL after ``timeout``)."""
    if not _alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + timeout
        time.sleep(0.05)


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


# -- the cluster ----------------------------------------------------------------------------
class MiniCluster:
    """NameNode + ``nodes`` DataNodes, and a dask scheduler + one worker per DataNode.

    The NameNode keeps Hadoop's default limits, as a stock HDFS does (a block is at
    least ``dfs.namenode.fs-limits.min-block-size``, 1 MiB), so tests meet what users
    meet. ``base`` holds everything (conf, name/data folders, logs, dask scratch). Node ``i``
    listens on ``hosts[i]`` = ``127.0.0.(i+2)``; its worker runs with
    ``HADOOP_CONF_DIR`` set to its DataNode's conf folder, which is how a worker finds
    its node's block folders. ``client_conf`` is a conf folder for clients (NameNode
    addresses only). Scheduler and workers import from the repository root and
    ``python_path`` (tests pass their own folder, as a LocalCluster's children would
    inherit it).
    """

    def __init__(self, base, nodes: int = 3, *, replication: int = 2, block_size: int = 2**20,
                 dask: bool = True, hadoop_home: Optional[Path] = None, python_path: tuple = ()):
        self.base = Path(base).resolve()
        self.nodes = nodes
        self.replication = replication
        self.block_size = block_size
        self.with_dask = dask
        self.hadoop_home = hadoop_home
        self.python_path = [str(REPO_ROOT), *map(str, python_path)]  # importable by scheduler and workers
        self.hosts = [f"127.0.0.{i + 2}" for i in range(nodes)]
        self.pids: dict[str, Optional[int]] = {}
        self.ports: dict[str, int] = {}
        self.scheduler_address: Optional[str] = None

    # -- addresses
    @property
    def namenode_rpc(self) -> str:
        return f"127.0.0.1:{self.ports['nn_rpc']}"

    @property
    def namenode_http(self) -> str:
        return f"127.0.0.1:{self.ports['nn_http']}"

    def url(self, path: str = "/") -> str:
        """``hdfs://127.0.0.1:PORT/path`` of this cluster."""
        return f"hdfs://{self.namenode_rpc}/{path.lstrip('/')}"

    @property
    def client_conf(self) -> Path:
        return self.base / "client" / "conf"

    def datanode_conf(self, i: int) -> Path:
        return self.base / f"dn{i}" / "conf"

    def data_dir(self, i: int) -> Path:
        return self.base / f"dn{i}" / "data"

    # -- lifecycle
    def start(self, timeout: float = 90.0) -> "MiniCluster":
        """Configure, format and start everything; returns when every DataNode and
        worker has registered. On failure everything started is stopped again."""
        self.hadoop_home = self.hadoop_home or prepare_hadoop()
        self.base.mkdir(parents=True, exist_ok=True)
        for old in ["logs", "tmp", "client", "nn", *(f"dn{i}" for i in range(self.nodes)),
                    *(f"dask-{i}" for i in range(self.nodes))]:
            shutil.rmtree(self.base / old, ignore_errors=True)  # a fresh file system each start
        (self.base / "logs").mkdir()
        try:
            self._configure()
            self._format()
            self.pids["namenode"] = self._java("namenode", self.base / "nn" / "conf",
                                               "org.apache.hadoop.hdfs.server.namenode.NameNode")
            for i in range(self.nodes):
                self.start_datanode(i, wait=False)
            if self.with_dask:
                self._start_scheduler()
                for i in range(self.nodes):
                    self.start_worker(i, wait=False)
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        self._save_state()
        return self

    def _configure(self) -> None:
        self.ports.update(nn_rpc=free_port("127.0.0.1"), nn_http=free_port("127.0.0.1"))
        for i, host in enumerate(self.hosts):
            for kind in ("xfer", "http", "ipc"):
                self.ports[f"dn{i}_{kind}"] = free_port(host)
        core = {"fs.defaultFS": f"hdfs://{self.namenode_rpc}", "hadoop.tmp.dir": self.base / "tmp"}
        shared = {
            "dfs.namenode.rpc-address": self.namenode_rpc,
            "dfs.namenode.http-address": self.namenode_http,
            "dfs.replication": self.replication,
            "dfs.blocksize": self.block_size,
            "dfs.permissions.enabled": "false",
            "dfs.webhdfs.enabled": "true",
            "dfs.heartbeat.interval": 1,
        }
        _write_conf(self.client_conf, core, shared)
        _write_conf(self.base / "nn" / "conf", core, {
            **shared,
            "dfs.namenode.name.dir": f"file://{self.base / 'nn' / 'name'}",
            # DataNodes register under their loopback IPs, which have no host names
            "dfs.namenode.datanode.registration.ip-hostname-check": "false",
            # a stopped DataNode is sorted last after 3 s, declared dead after ~12 s
            "dfs.namenode.avoid.read.stale.datanode": "true",
            "dfs.namenode.avoid.write.stale.datanode": "true",
            "dfs.namenode.stale.datanode.interval": 3000,
            "dfs.namenode.heartbeat.recheck-interval": 1000,
            "dfs.namenode.safemode.extension": 0,
        })
        for i, host in enumerate(self.hosts):
            _write_conf(self.datanode_conf(i), core, {
                **shared,
                "dfs.datanode.data.dir": f"file://{self.data_dir(i)}",
                "dfs.datanode.address": f"{host}:{self.ports[f'dn{i}_xfer']}",
                "dfs.datanode.http.address": f"{host}:{self.ports[f'dn{i}_http']}",
                "dfs.datanode.ipc.address": f"{host}:{self.ports[f'dn{i}_ipc']}",
                "dfs.datanode.hostname": host,
                "hadoop.rpc.socket.factory.class.default": "BoundSocketFactory",
                "stem_explorer.bind.address": host,
                # the analysis user reads finalized block files directly (short-circuit)
                "dfs.datanode.data.dir.perm": "755",
            })

    def _java(self, name: str, conf: Path, main: str, *args: str) -> int:
        cmd = ["java", *JVM_OPTIONS, f"-Dhadoop.log.dir={self.base / 'logs'}", "-cp",
               classpath(self.hadoop_home, conf), main, *args]
        return _spawn(cmd, self.base / "logs" / f"{name}.log")

    def _format(self) -> None:
        conf = self.base / "nn" / "conf"
        cmd = ["java", *JVM_OPTIONS, "-cp", classpath(self.hadoop_home, conf),
               "org.apache.hadoop.hdfs.server.namenode.NameNode", "-format", "-nonInteractive", "-force"]
        done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"formatting the NameNode failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")

    def start_datanode(self, i: int, wait: bool = True, timeout: float = 60.0) -> None:
        """Start (or restart) DataNode ``i`` on its own address and ports."""
        self.pids[f"dn{i}"] = self._java(f"dn{i}", self.datanode_conf(i),
                                         "org.apache.hadoop.hdfs.server.datanode.DataNode")
        if wait:
            self.wait_ready(timeout)

    def kill_datanode(self, i: int) -> None:
        """SIGKILL DataNode ``i`` (a node failure)."""
        stop_pid(self.pids.get(f"dn{i}"), sig=signal.SIGKILL)
        self.pids[f"dn{i}"] = None

    def _start_scheduler(self) -> None:
        sched_file = self.base / "scheduler.json"
        sched_file.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
               "--no-dashboard", "--scheduler-file", str(sched_file)]
        self.pids["scheduler"] = _spawn(cmd, self.base / "logs" / "scheduler.log", env=self._python_env(), cwd=REPO_ROOT)
        deadline = time.monotonic() + 60
        while not sched_file.exists():
            if time.monotonic() > deadline or not _alive(self.pids["scheduler"]):
                raise RuntimeError(f"the dask scheduler did not start:\n{_tail(self.base / 'logs' / 'scheduler.log')}")
            time.sleep(0.1)
        time.sleep(0.1)  # the file is written in one go, but give it a beat
        self.scheduler_address = json.loads(sched_file.read_text())["address"]

    def _python_env(self, extra: Optional[dict] = None) -> dict:
        env = dict(os.environ)
        env.pop("HADOOP_CONF_DIR", None)
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [*self.python_path, env.get("PYTHONPATH")]))
        env.update(extra or {})
        return env

    def start_worker(self, i: int, wait: bool = True, timeout: float = 60.0) -> None:
        """Start (or restart) the dask worker of node ``i``: host ``hosts[i]``, one
        thread, no nanny (its PID is the worker), ``HADOOP_CONF_DIR`` of DataNode ``i``."""
        scratch = self.base / f"dask-{i}"
        scratch.mkdir(exist_ok=True)
        cmd = [sys.executable, "-m", "distributed.cli.dask_worker", self.scheduler_address,
               "--host", self.hosts[i], "--nthreads", "1", "--no-nanny", "--no-dashboard",
               "--memory-limit", "0", "--name", f"node{i}", "--local-directory", str(scratch),
               "--death-timeout", "60"]
        env = self._python_env({"HADOOP_CONF_DIR": str(self.datanode_conf(i))})
        self.pids[f"worker{i}"] = _spawn(cmd, self.base / "logs" / f"worker{i}.log", env=env, cwd=REPO_ROOT)
        if wait:
            self.wait_ready(timeout)

    def kill_worker(self, i: int) -> None:
        """SIGKILL the dask worker of node ``i``."""
        stop_pid(self.pids.get(f"worker{i}"), sig=signal.SIGKILL)
        self.pids[f"worker{i}"] = None

    # -- readiness
    def _listening(self, i: int) -> bool:
        """Whether DataNode ``i`` accepts connections on its WebHDFS port (a restarted
        DataNode is still "live" at the NameNode before its new process listens)."""
        try:
            socket.create_connection((self.hosts[i], self.ports[f"dn{i}_http"]), timeout=1).close()
        except OSError:
            return False
        return True

    def live_datanodes(self) -> set:
        """Hosts of the DataNodes the NameNode counts as live (from its JMX)."""
        bean = _http_json(f"http://{self.namenode_http}/jmx?qry=Hadoop:service=NameNode,name=NameNodeInfo")["beans"]
        if not bean:
            return set()
        live = json.loads(bean[0].get("LiveNodes") or "{}")
        safemode = bean[0].get("Safemode")
        return set() if safemode else {v["xferaddr"].rsplit(":", 1)[0] for v in live.values()}

    def _workers_up(self, client) -> set:
        return {w.split("://")[-1].rsplit(":", 1)[0] for w in client.scheduler_info(n_workers=-1)["workers"]}

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Block until the running DataNodes are live and the running workers joined."""
        deadline = time.monotonic() + timeout
        want_dn = {self.hosts[i] for i in range(self.nodes) if self.pids.get(f"dn{i}")}
        want_w = {self.hosts[i] for i in range(self.nodes) if self.pids.get(f"worker{i}")}
        with contextlib.ExitStack() as stack:
            client = None
            if want_w:
                from distributed import Client

                client = stack.enter_context(Client(self.scheduler_address, timeout=30))
            while True:
                for name, pid in self.pids.items():
                    if pid and not _alive(pid):
                        log = _tail(self.base / "logs" / f"{name}.log")
                        raise RuntimeError(f"{name} (pid {pid}) exited during start-up:\n{log}")
                try:
                    listening = all(self._listening(i) for i in range(self.nodes) if self.pids.get(f"dn{i}"))
                    if listening and want_dn <= self.live_datanodes() and (
                            client is None or want_w <= self._workers_up(client)):
                        return
                except (OSError, ValueError, KeyError):
                    pass  # the NameNode is not answering yet
                if time.monotonic() > deadline:
                    raise TimeoutError(f"HDFS/dask not ready within {timeout:g} s; logs in {self.base / 'logs'}")
                time.sleep(0.25)

    # -- teardown
    def stop(self) -> None:
        """Stop every process this cluster started, by PID (workers first)."""
        order = sorted(self.pids, key=lambda n: (not n.startswith("worker"), n == "namenode"))
        for name in order:
            stop_pid(self.pids.get(name))
            self.pids[name] = None
        (self.base / "cluster.json").unlink(missing_ok=True)

    def _save_state(self) -> None:
        state = {"pids": self.pids, "ports": self.ports, "hosts": self.hosts, "url": self.url("/"),
                 "namenode_http": self.namenode_http, "scheduler": self.scheduler_address,
                 "client_conf": str(self.client_conf),
                 "datanode_conf": [str(self.datanode_conf(i)) for i in range(self.nodes)]}
        (self.base / "cluster.json").write_text(json.dumps(state, indent=1))

    def __enter__(self) -> "MiniCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv=None) -> int:
    """``start`` / ``stop`` a cluster whose state lives in ``--dir``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=["start", "stop", "prepare"])
    p.add_argument("--dir", default=str(Path(tempfile.gettempdir()) / "stem-explorer-hdfs"))
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--replication", type=int, default=2)
    p.add_argument("--block-size", type=int, default=128 * 2**20)
    p.add_argument("--no-dask", action="store_true", help="HDFS only")
    args = p.parse_args(argv)
    if args.action == "prepare":
        print(prepare_hadoop())
        return 0
    state_file = Path(args.dir) / "cluster.json"
    if args.action == "stop":
        if not state_file.exists():
            print(f"no cluster state in {state_file}", file=sys.stderr)
            return 1
        for pid in json.loads(state_file.read_text())["pids"].values():
            stop_pid(pid)
        state_file.unlink()
        return 0
    if state_file.exists():
        print(f"{state_file} exists: a cluster may be running; stop it first", file=sys.stderr)
        return 1
    mc = MiniCluster(args.dir, args.nodes, replication=args.replication, block_size=args.block_size,
                     dask=not args.no_dask).start()
    print(state_file.read_text())
    del mc  # processes keep running in their own sessions; `stop` ends them
    return 0


if __name__ == "__main__":
    sys.exit(main())
