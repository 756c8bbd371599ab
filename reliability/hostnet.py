"""Hosts of their own on one machine: a Linux network namespace per host, joined by a bridge.

    with hosts(3) as net:               # as root; removed on the way out, also on failure
        net.gateway                     # 10.213.N.1: the bridge's address, where servers listen
        host = net.hosts[0]             # host.name "cw-host-1", host.address 10.213.N.11
        fork(ws, "run", JOB, enter=host.enter)   # the invocation runs inside that host
        host.cut()                      # the host's link goes down: its packets vanish, both ways
        host.unroute()                  # no route to anything: connect fails at once

Only addresses in 10.213.N.0/24 (a /24 no interface of this machine uses yet) and only namespaces
and links this module creates are ever touched. A host is entered by a forked child: it joins the
host's network namespace and a new UTS namespace of its own with the host's name, so `hostname`,
the run history's `host` and every connection's source address are the host's.
"""

from __future__ import annotations

import ctypes
import os
import random
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

CLONE_NEWUTS = 0x04000000
CLONE_NEWNET = 0x40000000
PREFIX = "10.213"


def unavailable() -> str | None:
    """None when namespaces can be made here, else why not (a test skips with it, outside CI)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def _free_subnet() -> str:
    """10.213.N with no address of this machine in it."""
    used = _ip("-o", "-4", "addr", "show").stdout
    for n in random.sample(range(1, 255), 254):
        if f" {PREFIX}.{n}." not in used:
            return f"{PREFIX}.{n}"
    raise RuntimeError(f"every {PREFIX}.N.0/24 is in use on this machine")


@dataclass
class Host:
    name: str
    netns: str
    address: str
    link: str  # the bridge's end of the host's veth pair
    peer: str  # the host's end

    def enter(self) -> None:
        """In a forked child: become this host (its network, its hostname)."""
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{self.netns}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {self.netns}")
        finally:
            os.close(fd)
        if libc.unshare(CLONE_NEWUTS) != 0:
            raise OSError(ctypes.get_errno(), "unshare the UTS namespace")
        socket.sethostname(self.name)

    def cut(self) -> None:
        """The host vanishes from the network: nothing it sends arrives, nothing sent to it arrives."""
        _ip("link", "set", self.link, "down")

    def restore(self) -> None:
        _ip("link", "set", self.link, "up")

    def unroute(self) -> None:
        """No route to anything: a connect fails at once with 'Network is unreachable'."""
        _ip("-n", self.netns, "route", "flush", "table", "main")

    def reroute(self) -> None:
        subnet = self.address.rsplit(".", 1)[0] + ".0/24"
        _ip("-n", self.netns, "route", "add", subnet, "dev", self.peer, "src", self.address)


@dataclass
class Network:
    gateway: str
    bridge: str
    hosts: list[Host]


@contextmanager
def hosts(n: int) -> Iterator[Network]:
    """n hosts on a bridge of their own; every namespace and link is removed on the way out."""
    why = unavailable()
    if why:
        raise RuntimeError(why)
    tag = f"{os.getpid() % 0xFFFF:04x}"
    subnet = _free_subnet()
    bridge = f"cwbr{tag}"
    made_links: list[str] = []
    made_netns: list[str] = []
    try:
        _ip("link", "add", bridge, "type", "bridge")
        made_links.append(bridge)
        _ip("addr", "add", f"{subnet}.1/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        net = Network(f"{subnet}.1", bridge, [])
        for i in range(1, n + 1):
            netns, link, peer = f"cw-{tag}-host{i}", f"cwv{tag}h{i}", f"cwp{tag}h{i}"
            _ip("netns", "add", netns)
            made_netns.append(netns)
            _ip("link", "add", link, "type", "veth", "peer", "name", peer)
            made_links.append(link)
            _ip("link", "set", peer, "netns", netns)
            _ip("link", "set", link, "master", bridge, "up")
            address = f"{subnet}.{10 + i}"
            _ip("-n", netns, "addr", "add", f"{address}/24", "dev", peer)
            _ip("-n", netns, "link", "set", peer, "up")
            _ip("-n", netns, "link", "set", "lo", "up")
            net.hosts.append(Host(f"cw-host-{i}", netns, address, link, peer))
        yield net
    finally:
        for netns in made_netns:
            _ip("netns", "delete", netns, check=False)  # takes the host's end of its veth pair along
        for link in reversed(made_links):
            _ip("link", "delete", link, check=False)
