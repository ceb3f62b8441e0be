"""A real multi-node Ray cluster on this machine, bound to the loopback interface, for tests.

`LocalCluster` starts `python tests/_ray_cluster.py` in a process group of its
own. That child starts a head node and further nodes with
`ray.cluster_utils.Cluster` (one raylet each), prints the cluster address,
waits until the test closes its stdin and then shuts the nodes down.
Stopping kills only that process group, so Ray clusters of other users or
sessions on the same machine are never touched. `ray stop` would stop every
Ray process of the user, whichever cluster it belongs to.

Why not `ray start`: in Ray 2.60, `ray start --node-ip-address=127.0.0.1`
replaces the loopback address with the machine's network address, and the
GCS and raylet then listen on every interface. Nodes created through
`ray.cluster_utils.Cluster` keep 127.0.0.1, and with
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 every process that connects (the sweep
driver, the trial workers) also resolves 127.0.0.1 to itself instead of to
the network address.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"
OBJECT_STORE_BYTES = 300 * 1024**2  # per node; the smoke sweep's two data sets take about 100 MB


def cluster_environment(root: Path, token_file: Path) -> dict[str, str]:
    """Environment variables for the cluster and for every process that connects to it.

    Ray's temp folder becomes root/ray.
    """
    return {
        "RAY_USAGE_STATS_ENABLED": "0",
        # Makes Ray use 127.0.0.1 as this machine's node address. Ray reads the
        # variable for macOS and Windows, where multi-node clusters are off by
        # default; here it keeps every listener on the loopback interface.
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        # Session folders and the `ray_current_cluster` address file go here,
        # not to the /tmp/ray that other Ray users on this machine share.
        "RAY_TMPDIR": str(root),
        # Token authentication with a token private to this cluster. Without
        # RAY_AUTH_MODE, Ray 2.60 enables tokens whenever ~/.ray/auth_token
        # exists, so results would depend on other users' files.
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_file),
    }


class LocalCluster:
    """A Ray cluster of `nodes` nodes with `cpus_per_node` CPUs each and no GPU, in a child process."""

    def __init__(self, root: Path, nodes: int = 2, cpus_per_node: int = 1, start_timeout_s: float = 120.0):
        # Unix socket paths are limited to 107 bytes, and Ray nests
        # session_<timestamp>/sockets/plasma_store under the temp folder, so
        # `root` must be a short path such as /tmp/rayXXXX.
        self.root = root
        self.nodes = nodes
        self.cpus_per_node = cpus_per_node
        self.start_timeout_s = start_timeout_s
        self.temp_dir = root / "ray"
        self.token_file = root / "auth_token"
        self.log_file = root / "cluster.log"
        self.ray_env = cluster_environment(root, self.token_file)
        self.process: subprocess.Popen[str] | None = None
        self.address = ""
        self.node_ids: list[str] = []
        self.start_time_s = 0.0

    def start(self) -> LocalCluster:
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        self.token_file.write_text(secrets.token_hex(32))
        self.token_file.chmod(0o600)
        started = time.perf_counter()
        with open(self.log_file, "w") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--temp-dir",
                    str(self.temp_dir),
                    "--nodes",
                    str(self.nodes),
                    "--cpus-per-node",
                    str(self.cpus_per_node),
                ],
                env=self.environment(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                start_new_session=True,
            )

        # The child prints one JSON line once every node has registered.
        line = ""
        ready, _, _ = select.select([self.process.stdout], [], [], self.start_timeout_s)
        if ready:
            line = self.process.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError(
                f"the {self.nodes}-node Ray cluster did not start within {self.start_timeout_s:.0f} s; "
                f"its log is {self.log_file}:\n{self.log_tail()}"
            )
        info = json.loads(line)
        self.address = info["address"]
        self.node_ids = info["node_ids"]
        self.start_time_s = time.perf_counter() - started
        return self

    def environment(self) -> dict[str, str]:
        """This process's environment as it is now, plus the variables every client of the cluster needs."""
        return {**os.environ, **self.ray_env}

    def stop(self, timeout_s: float = 60.0) -> None:
        """Shut the nodes down, then kill whatever is left in the cluster's process group."""
        if self.process is None:
            return
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()

        # Wait for the child to exit without reaping it (WNOWAIT): while it is
        # unreaped, its pid, which is also the process group id, cannot be
        # given to another process, so killpg below reaches only this cluster.
        pid = self.process.pid
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                break
            time.sleep(0.2)
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None

    def group_pids(self) -> list[int]:
        """Process ids of the cluster's process group (the child and every Ray process it started)."""
        if self.process is None:
            return []
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.getpgid(int(entry.name)) == self.process.pid:
                    pids.append(int(entry.name))
            except ProcessLookupError:
                continue
        return pids

    def listening_addresses(self) -> set[str]:
        """Local IP addresses on which the cluster's processes accept TCP connections (Linux /proc only)."""
        inodes = set()
        for pid in self.group_pids():
            try:
                for fd in (Path("/proc") / str(pid) / "fd").iterdir():
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[len("socket:[") : -1])
            except (FileNotFoundError, PermissionError):
                continue
        addresses = set()
        for table, decode in (("/proc/net/tcp", _decode_ipv4), ("/proc/net/tcp6", _decode_ipv6)):
            for row in Path(table).read_text().splitlines()[1:]:
                fields = row.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and inode in inodes:  # 0A: LISTEN
                    addresses.add(decode(local.split(":")[0]))
        return addresses

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_file.is_file():
            return "(no log)"
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def _decode_ipv4(hex_address: str) -> str:
    # /proc/net/tcp stores the address as one little-endian 32-bit word.
    return ".".join(str(int(hex_address[i : i + 2], 16)) for i in (6, 4, 2, 0))


def _decode_ipv6(hex_address: str) -> str:
    # Four little-endian 32-bit words; IPv4-mapped addresses end in the IPv4 word.
    words = [hex_address[i : i + 8] for i in range(0, 32, 8)]
    if words[:2] == ["00000000", "00000000"] and words[2] == "FFFF0000":
        return _decode_ipv4(words[3])
    if hex_address == "0" * 32:
        return "::"
    if hex_address == "00000000000000000000000001000000":
        return "::1"
    return hex_address


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def _serve(args: argparse.Namespace) -> None:
    """Start the nodes, print their address and ids as one JSON line, wait for stdin to close, stop them."""
    from ray.cluster_utils import Cluster

    node_args = {
        "num_cpus": args.cpus_per_node,
        "num_gpus": 0,
        "node_ip_address": LOOPBACK,
        "temp_dir": args.temp_dir,
        "object_store_memory": OBJECT_STORE_BYTES,
    }
    # The head's dashboard agent would otherwise take Ray's fixed default
    # port 52365, which another Ray cluster on this machine may hold.
    head_args = {**node_args, "include_dashboard": False, "dashboard_agent_listen_port": _free_port()}
    cluster = Cluster(initialize_head=True, head_node_args=head_args)
    try:
        for _ in range(args.nodes - 1):
            cluster.add_node(**node_args)
        node_ids = [cluster.head_node.node_id] + [node.node_id for node in cluster.worker_nodes]
        print(json.dumps({"address": cluster.address, "node_ids": node_ids}), flush=True)

        # Blocks until the test closes the pipe, or until the test process dies.
        sys.stdin.read()
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Run a loopback-only Ray cluster until stdin closes.")
    parser.add_argument("--temp-dir", required=True, help="Ray's temp folder for every node (keep the path short)")
    parser.add_argument("--nodes", type=int, default=2, help="raylets, the head included (default 2)")
    parser.add_argument("--cpus-per-node", type=int, default=1, help="CPUs each raylet offers (default 1)")
    _serve(parser.parse_args())
