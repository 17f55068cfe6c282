"""A TCP forwarder in front of a real peer that a test can cut, for real network faults.

Not a fake of anything: every byte goes to and from the real server (vcsim, say), TLS
included, untouched. `cut_after(n)` severs every connection once `n` more bytes have come
back from the server and refuses new ones until `mend()`, which is what a vCenter that
drops off the network mid-download looks like to the agent: a reset in the middle of a
body, then connections refused.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class Cutter:
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._budget: int | None = None
        self._cut = False
        self.cuts = 0
        threading.Thread(target=self._accept, name="cutter", daemon=True).start()

    def cut_after(self, n: int) -> None:
        with self._lock:
            self._budget = n

    def mend(self) -> None:
        with self._lock:
            self._cut = False
            self._budget = None

    @property
    def is_cut(self) -> bool:
        return self._cut

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.close()
        self._sever()

    def _sever(self) -> None:
        with self._lock:
            sockets, self._open = list(self._open), set()
        for s in sockets:
            # close() alone frees nothing while a pipe thread is blocked in recv on the
            # socket (the kernel keeps it open for that call), so the agent would hang until
            # its own read timeout (60 s); shutdown wakes the recv and ends the connection.
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
                s.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._cut:
                client.close()
                continue
            try:
                server = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open |= {client, server}
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, downstream: bool) -> None:
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                if downstream:
                    with self._lock:
                        if self._budget is not None:
                            self._budget -= len(data)
                            fire = self._budget <= 0
                        else:
                            fire = False
                    if fire:
                        self._cut, self._budget = True, None
                        self.cuts += 1
                        self._sever()
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()
