"""A real Ray cluster for the tests, with network traffic kept to loopback or
to network namespaces the test creates.

Two layouts:

* ``netns`` (two nodes, needs root and iproute2): two network namespaces
  joined by a veth pair with 10.x addresses; the head node runs in the first
  (``ray start --block --head --node-ip-address=<first>``), a worker node in
  the second (``ray start --block --address=<first>:<port>``), and the driver
  inside the first namespace.
* ``loopback`` (one node): ``ray start --block --head`` with
  ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` and ``--node-ip-address=127.0.0.1``,
  so Ray binds to 127.0.0.1 only (multi-node is then refused).

Every ``ray start`` runs under ``setsid`` with its own ``--temp-dir``, so each
node is one session (its daemons share the node's process group; Ray puts
each worker in a group of its own, within that session). Stopping sends TERM
to every process of those sessions, then KILL after a grace period (Ray's
daemons outlive a plain TERM), and deletes the namespaces. Nothing here stops
Ray processes by name or with ``ray stop``: only processes in the sessions
this harness started are signalled.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

#: Port of the head node's GCS.
HEAD_PORT = 6379
#: Object store per node (bytes): small, the tests move little data.
OBJECT_STORE_BYTES = 200 * 1024 * 1024
#: How long a node may take to come up (seconds).
START_TIMEOUT_S = 90.0
#: Grace period between TERM and KILL (seconds).
STOP_GRACE_S = 5.0
#: Subnet of the veth pair (a /24 picked per test run; 10.0.0.0/8 is private).
SUBNET_BASE = "10.213"
#: Ray's log line once a node is up.
STARTED_MARKER = "Ray runtime started"


def netns_available() -> bool:
    """Root with iproute2: namespaces can be made."""
    return os.geteuid() == 0 and shutil.which("ip") is not None


def _sessions() -> Dict[int, int]:
    """Session id of every live process (zombies excluded), from /proc."""
    out: Dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command: state, ppid, pgrp, session, ...
        if fields[0] != "Z":
            out[int(entry)] = int(fields[3])
    return out


def _ray_executable() -> str:
    candidate = Path(sys.executable).with_name("ray")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("ray")
    if not found:
        raise RuntimeError("the `ray` command is not installed next to this Python")
    return found


def _base_env() -> Dict[str, str]:
    env = dict(os.environ)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    # No proxies inside the namespaces: there is nowhere to reach.
    for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env.pop(key, None)
    return env


class RayCluster:
    """Starts and stops a test cluster (see the module docs)."""

    def __init__(self, layout: str = "auto", cpus_per_node: int = 1) -> None:
        if layout == "auto":
            layout = "netns" if netns_available() else "loopback"
        if layout not in ("netns", "loopback"):
            raise ValueError(f"unknown layout {layout!r}")
        self.layout = layout
        self.cpus_per_node = cpus_per_node
        tag = f"{os.getpid() % 100000}"
        self._namespaces: List[str] = []
        self._veth = (f"emr{tag}a", f"emr{tag}b")
        subnet = f"{SUBNET_BASE}.{os.getpid() % 250 + 1}"
        if layout == "netns":
            self._namespaces = [f"earmark-ray-{tag}-head", f"earmark-ray-{tag}-worker"]
            self.addresses = [f"{subnet}.1", f"{subnet}.2"]
        else:
            self.addresses = ["127.0.0.1"]
        # Ray's socket paths must stay short: a short temp dir under /tmp.
        self.temp_root = Path(tempfile.mkdtemp(prefix="emray", dir="/tmp"))
        self._nodes: List[subprocess.Popen] = []
        self._logs: List[Path] = []

    @property
    def nodes(self) -> int:
        return len(self.addresses)

    @property
    def address(self) -> str:
        return f"{self.addresses[0]}:{HEAD_PORT}"

    def _in_namespace(self, index: int, argv: Sequence[str]) -> List[str]:
        if self.layout == "netns":
            return ["ip", "netns", "exec", self._namespaces[index], *argv]
        return list(argv)

    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True)

    def _make_namespaces(self) -> None:
        head, worker = self._namespaces
        a, b = self._veth
        for ns in self._namespaces:
            self._ip("netns", "add", ns)
        self._ip("link", "add", a, "type", "veth", "peer", "name", b)
        self._ip("link", "set", a, "netns", head)
        self._ip("link", "set", b, "netns", worker)
        for ns, dev, addr in ((head, a, self.addresses[0]), (worker, b, self.addresses[1])):
            self._ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            self._ip("-n", ns, "link", "set", "lo", "up")
            self._ip("-n", ns, "link", "set", dev, "up")

    def _start_node(self, index: int) -> None:
        temp_dir = self.temp_root / f"n{index}"
        temp_dir.mkdir()
        argv = [
            _ray_executable(),
            "start",
            "--block",
            f"--node-ip-address={self.addresses[index]}",
            f"--temp-dir={temp_dir}",
            f"--num-cpus={self.cpus_per_node}",
            f"--object-store-memory={OBJECT_STORE_BYTES}",
            "--disable-usage-stats",
        ]
        if index == 0:
            argv += ["--head", f"--port={HEAD_PORT}", "--include-dashboard=false"]
        else:
            argv += [f"--address={self.address}"]
        env = _base_env()
        if self.layout == "loopback":
            env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        log = self.temp_root / f"node{index}.log"
        self._logs.append(log)
        with log.open("w") as out:
            proc = subprocess.Popen(
                self._in_namespace(index, argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # setsid: the node is its own process group
            )
        self._nodes.append(proc)
        deadline = time.monotonic() + START_TIMEOUT_S
        while STARTED_MARKER not in log.read_text(errors="replace"):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"ray node {index} exited with {proc.returncode}:\n{log.read_text()[-4000:]}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"ray node {index} not up after {START_TIMEOUT_S:.0f} s:\n"
                    f"{log.read_text()[-4000:]}"
                )
            time.sleep(0.5)

    def start(self) -> "RayCluster":
        try:
            if self.layout == "netns":
                self._make_namespaces()
            for index in range(self.nodes):
                self._start_node(index)
        except BaseException:
            self.stop()
            raise
        return self

    def run_driver(
        self, argv: Sequence[str], *, timeout_s: float = 600.0, env: Optional[Dict[str, str]] = None
    ) -> subprocess.CompletedProcess:
        """Runs a Python driver (``python argv...``) connected to the cluster
        (inside the head node's namespace); ``RAY_ADDRESS`` names the head."""
        full_env = _base_env()
        full_env.update(env or {})
        full_env["RAY_ADDRESS"] = self.address
        full_env["EARMARK_RAY_NODE_IP"] = self.addresses[0]
        if self.layout == "loopback":
            full_env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        return subprocess.run(
            self._in_namespace(0, [sys.executable, *argv]),
            capture_output=True,
            text=True,
            env=full_env,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )

    def logs(self) -> str:
        return "\n".join(
            f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}"
            for log in self._logs
            if log.exists()
        )

    def _members(self) -> List[int]:
        """Processes in the sessions of the nodes started here (Ray moves its
        workers to process groups of their own, but they stay in the session
        `setsid` made)."""
        sessions = {proc.pid for proc in self._nodes}
        return [pid for pid, sid in _sessions().items() if sid in sessions]

    def stop(self) -> None:
        """TERM, then KILL, the processes of the nodes started here (their
        sessions); then deletes the namespaces and the temp dir."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self._members():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + STOP_GRACE_S
            while time.monotonic() < deadline:
                for proc in self._nodes:
                    proc.poll()  # reap the `ray start` processes this harness owns
                if not self._members():
                    break
                time.sleep(0.2)
        self._nodes = []
        for ns in self._namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(self.temp_root, ignore_errors=True)

    def __enter__(self) -> "RayCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
