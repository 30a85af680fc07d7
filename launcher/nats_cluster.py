"""A 3-node NATS cluster with JetStream on loopback, for fault tests: stop, kill, pause and
restart single nodes, find a stream's leader.

Each node keeps its client, route and monitoring ports and its store dir across restarts, so
a client listing every node's URL finds a restarted node where it was.
"""

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import nats.errors
from nats.js import JetStreamContext

from batchbus.launcher import processes
from batchbus.launcher.nats_server import READY_TIMEOUT, server_binary
from batchbus.launcher.services import free_port

CLUSTER_NAME = "batchbus"


@dataclass
class ClusterNode:
    """One nats-server of the cluster; `name` is its server_name (what stream leaders name)."""

    name: str
    client_port: int
    route_port: int
    monitor_port: int
    store_dir: Path
    config_path: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        self.process = subprocess.Popen(
            [server_binary(), "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        log.close()

    def kill(self) -> None:
        """SIGKILL: what a crashed process leaves on disk is what the restart finds."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # a paused (SIGSTOPped) node dies too
            self.process.wait()

    def stop(self) -> None:
        """SIGTERM (lame-duck shutdown), SIGKILL if it does not exit in time."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)  # a paused node cannot handle SIGTERM
        processes.stop(self.process)

    def pause(self) -> None:
        """SIGSTOP: the node stays connected but answers nothing, like a long GC pause."""
        assert self.running and self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.running and self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def healthy(self) -> bool:
        """The server's /healthz: up, JetStream enabled, and caught up with the meta leader
        and its streams (a restarted node says no until it has replayed what it missed)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_port}/healthz",
                                        timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def client_names(self) -> list[str]:
        """The names of the clients connected to this node (its /connz)."""
        url = f"http://127.0.0.1:{self.monitor_port}/connz?limit=4096"
        with urllib.request.urlopen(url, timeout=2) as response:
            connz = json.load(response)
        return [c.get("name", "") for c in connz.get("connections") or []]

    def wait_healthy(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"nats-server {self.name} exited; see {self.log_path}")
            if self.healthy():
                return
            time.sleep(0.1)  # poll interval while the node starts and catches up
        raise RuntimeError(f"nats-server {self.name} not healthy after {timeout}s; "
                           f"see {self.log_path}")


@dataclass
class NatsCluster:
    nodes: list[ClusterNode] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Every node's client URL, comma separated (NATS_URL for the services)."""
        return ",".join(node.url for node in self.nodes)

    def node(self, name: str) -> ClusterNode:
        return next(node for node in self.nodes if node.name == name)

    def wait_healthy(self, timeout: float = READY_TIMEOUT) -> None:
        for node in self.nodes:
            if node.running:
                node.wait_healthy(timeout)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    async def stream_leader(self, js: JetStreamContext, stream: str) -> ClusterNode | None:
        """The node leading `stream`'s Raft group, or None while it has no leader."""
        leader = (await js.stream_info(stream)).cluster
        return self.node(leader.leader) if leader is not None and leader.leader else None

    async def wait_stream_leader(self, js: JetStreamContext, stream: str, timeout: float,
                                 other_than: ClusterNode | None = None) -> ClusterNode:
        """Polls until `stream` has a leader (other than `other_than`), within `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                leader = await asyncio.wait_for(self.stream_leader(js, stream), 2.0)
                if leader is not None and leader is not other_than and leader.running:
                    return leader
            if time.monotonic() > deadline:
                raise TimeoutError(f"stream {stream} has no leader after {timeout}s")
            await asyncio.sleep(0.1)  # poll interval while the survivors elect a leader


def start_cluster(base_dir: str | None = None, size: int = 3, sync_always: bool = True) -> NatsCluster:
    """Starts `size` nodes on free loopback ports and waits until every one is healthy.

    `sync_always` fsyncs every write (`sync_interval: always`), the setting docs/production.md
    recommends; without it the server's 2-minute default applies.
    """
    base = Path(base_dir or tempfile.mkdtemp(prefix="batchbus-cluster-"))
    ports = [(free_port(), free_port(), free_port()) for _ in range(size)]
    cluster = NatsCluster()
    for i, (client, route, monitor) in enumerate(ports):
        name = f"n{i + 1}"
        routes = [f"nats-route://127.0.0.1:{r}" for j, (_, r, _) in enumerate(ports) if j != i]
        node = ClusterNode(name, client, route, monitor, base / name / "store",
                           base / name / "nats.conf", base / name / "nats.log")
        node.store_dir.mkdir(parents=True, exist_ok=True)
        node.config_path.write_text(node_config(node, routes, sync_always))
        cluster.nodes.append(node)
    try:
        for node in cluster.nodes:
            node.start()
        cluster.wait_healthy()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def node_config(node: ClusterNode, routes: list[str], sync_always: bool) -> str:
    sync = "\n  sync_interval: always" if sync_always else ""
    route_list = ", ".join(f'"{r}"' for r in routes)
    return (
        f"server_name: {node.name}\n"
        f"listen: 127.0.0.1:{node.client_port}\n"
        f"http: 127.0.0.1:{node.monitor_port}\n"
        f"jetstream {{\n  store_dir: \"{node.store_dir}\"{sync}\n}}\n"
        f"cluster {{\n  name: {CLUSTER_NAME}\n  listen: 127.0.0.1:{node.route_port}\n"
        f"  routes: [{route_list}]\n}}\n"
    )
