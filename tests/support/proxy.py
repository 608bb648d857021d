"""A TCP proxy on 127.0.0.1 that a test can cut: the network between a client and a server going
away mid-call (the client sees its socket die without a close frame: 1006), then coming back."""

from __future__ import annotations

import socket
import struct
import threading

from tests.support.sockets import LOCALHOST


class CuttableProxy:
    def __init__(self, target_port: int) -> None:
        self.target = (LOCALHOST, target_port)
        self._listen = socket.create_server((LOCALHOST, 0))
        self.port = self._listen.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def base(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listen.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        """Drop every connection now, both ways, without a word (new ones still go through)."""
        with self._lock:
            conns, self._conns = self._conns, []
            self.cuts += 1
        for s in conns:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close: a reset
                s.shutdown(socket.SHUT_RDWR)  # wakes the pump blocked in recv (close alone would not)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self._closed = True
        self._listen.close()
        self.cut()
