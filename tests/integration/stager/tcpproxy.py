"""A TCP proxy in front of a real server (moto's S3): counts bytes sent to the client and
can cut or stall the stream once a byte budget is reached."""

from __future__ import annotations

import contextlib
import socket
import threading


class FaultProxy:
    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.sent = 0  # bytes from the server to clients
        self.cut_after: int | None = None
        self.stall_after: int | None = None
        self.release = threading.Event()
        self.stalled = threading.Event()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._closing = False
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self) -> None:
        self._closing = True
        self.release.set()
        self._listener.close()
        for s in list(self._socks):
            with contextlib.suppress(OSError):
                s.close()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _addr = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self._socks += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _budget(self, n: int) -> tuple[int, str | None]:
        """How many of `n` bytes may pass, and the fault to apply after them."""
        with self._lock:
            for name in ("cut_after", "stall_after"):
                limit = getattr(self, name)
                if limit is not None and self.sent + n >= limit:
                    allowed = max(0, limit - self.sent)
                    setattr(self, name, None)
                    self.sent += allowed
                    return allowed, name
            self.sent += n
            return n, None

    def _pump(self, src: socket.socket, dst: socket.socket, downstream: bool) -> None:
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                fault = None
                if downstream:
                    allowed, fault = self._budget(len(data))
                    data = data[:allowed]
                dst.sendall(data)
                if fault == "stall_after":
                    self.stalled.set()
                    self.release.wait(120)
                if fault:
                    break
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()
