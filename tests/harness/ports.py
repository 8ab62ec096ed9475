"""Free loopback ports for the components a session starts.

The OS picks a free port (bind to 0). The allocator remembers every port it
handed out so two components of one session never get the same one even if
the OS would offer it again. The short window between closing the probe socket
and the component binding is accepted: Linux does not reuse an ephemeral port
that soon.
"""

from __future__ import annotations

import socket


class PortAllocator:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._handed_out: set[int] = set()

    def take(self) -> int:
        """A TCP port on ``host`` that nothing listens on right now."""
        for _ in range(50):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((self.host, 0))
                port = int(s.getsockname()[1])
            if port not in self._handed_out:
                self._handed_out.add(port)
                return port
        raise RuntimeError("no free port found after 50 tries")
