"""`make node-up`: the test suite's one-node cluster, by hand, until Ctrl-C.

Starts the same cluster as the ``node`` fixture (tests/harness/node.py) in
.tools/node-up, prints how to use it, and tears it all down on Ctrl-C or
SIGTERM. Needs root and `make tools`.
"""

from __future__ import annotations

import shutil
import signal
import sys
import threading

from .node import KubeNode
from .ports import PortAllocator
from .tools import TOOLS_BIN, ToolMissing, find_tool

TOOLS = ("kube-apiserver", "etcd", "kubelet", "kube-controller-manager", "kube-scheduler",
         "kube-proxy", "coredns", "containerd", "ctr")  # fmt: skip


def main() -> int:
    try:
        tools = {name: find_tool(name) for name in TOOLS}
        kubectl = find_tool("kubectl")
    except ToolMissing as e:
        print(e, file=sys.stderr)
        return 1
    workdir = TOOLS_BIN.parent / "node-up"
    shutil.rmtree(workdir, ignore_errors=True)
    node = KubeNode(tools=tools, images_dir=TOOLS_BIN.parent / "images", workdir=workdir, ports=PortAllocator())
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        cluster = node.start()
        images = "\n".join(f"  {ref}" for ref in cluster.images.values())
        print(
            f"A one-node cluster is up (logs in {workdir}).\n\n"
            f"  export KUBECONFIG={cluster.kubeconfig}\n"
            f"  {kubectl} get nodes\n\n"
            f"Images on the node (use imagePullPolicy: Never):\n{images}\n\n"
            "Ctrl-C stops it and removes everything it made.",
            flush=True,
        )
        stop.wait()
    finally:
        node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
