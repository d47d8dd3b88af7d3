"""Just enough HTTP/1.1 for the lab router to relay bytes: message heads and body ends.

The router never copies or re-encodes a body: it forwards the bytes as they arrive and
only needs to know where each message ends, so that a kept-alive connection can carry
the next request (RFC 9112 section 6: Transfer-Encoding chunked, else Content-Length,
else a response runs until the connection closes; HEAD, 1xx, 204 and 304 responses have
no body).
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_HEAD = 64 * 1024
MAX_LINE = 8 * 1024


class BadMessage(ValueError):
    """The peer sent something that is not HTTP/1.1 as this relay understands it."""


@dataclass
class Head:
    start: str  # request line or status line
    headers: list[tuple[str, str]] = field(default_factory=list)

    def get(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return default

    def tokens(self, name: str) -> set[str]:
        """Comma-separated values of every header `name`, lower case."""
        name = name.lower()
        return {t.strip().lower() for k, v in self.headers if k.lower() == name
                for t in v.split(",") if t.strip()}


def split_head(buffer: bytes | bytearray) -> tuple[Head, int] | None:
    """The head at the start of buffer and where its body starts; None if incomplete."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_HEAD:
            raise BadMessage(f"message head larger than {MAX_HEAD} bytes")
        return None
    lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    head = Head(lines[0])
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadMessage(f"malformed header line {line[:80]!r}")
        head.headers.append((name, value.strip()))
    return head, end + 4


class Body:
    """Counts a message body's bytes as they pass and says where it ends.

    ``feed(data, start)`` returns the index in data just after the body's last byte
    (``len(data)`` while the body goes on); ``done`` turns true at the end. ``length``
    None without chunked means the body runs until the connection closes.
    """

    def __init__(self, length: int | None = 0, chunked: bool = False) -> None:
        self.chunked = chunked
        self.left = length
        self.state = "size"
        self.line = b""
        self.done = not chunked and length == 0

    @classmethod
    def of_request(cls, head: Head) -> Body:
        if "chunked" in head.tokens("Transfer-Encoding"):
            return cls(chunked=True)
        return cls(_length(head))

    @classmethod
    def of_response(cls, head: Head, method: str) -> Body:
        status = status_of(head)
        if method == "HEAD" or status < 200 or status in (204, 304):
            return cls(0)
        if "chunked" in head.tokens("Transfer-Encoding"):
            return cls(chunked=True)
        length = head.get("Content-Length")
        return cls(_length(head) if length is not None else None)

    def feed(self, data: bytes | bytearray, start: int = 0) -> int:
        if self.done:
            return start
        if self.chunked:
            return self._chunked(data, start)
        if self.left is None:
            return len(data)
        take = min(self.left, len(data) - start)
        self.left -= take
        self.done = self.left == 0
        return start + take

    def _chunked(self, data: bytes | bytearray, i: int) -> int:
        n = len(data)
        while i < n and not self.done:
            if self.state == "data":
                take = min(self.left or 0, n - i)
                i += take
                self.left = (self.left or 0) - take
                if self.left == 0:
                    self.state = "crlf"
                continue
            j = data.find(b"\n", i)
            if j < 0:
                self.line += bytes(data[i:])
                if len(self.line) > MAX_LINE:
                    raise BadMessage("chunk line too long")
                return n
            line = (self.line + bytes(data[i:j])).rstrip(b"\r")
            self.line, i = b"", j + 1
            if self.state == "size":
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise BadMessage(f"bad chunk size {line[:40]!r}") from None
                self.state, self.left = ("trailer", 0) if size == 0 else ("data", size)
            elif self.state == "crlf":
                if line:
                    raise BadMessage("chunk data longer than its size")
                self.state = "size"
            elif not line:  # trailer section ends with an empty line
                self.done = True
        return i


def status_of(head: Head) -> int:
    parts = head.start.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise BadMessage(f"bad status line {head.start[:80]!r}")
    return int(parts[1])


def _length(head: Head) -> int:
    values = {v.strip() for k, v in head.headers if k.lower() == "content-length"}
    if not values:
        return 0
    if len(values) > 1 or not next(iter(values)).isdigit():
        raise BadMessage(f"bad Content-Length {sorted(values)}")
    return int(next(iter(values)))


def response(status: int, reason: str, body: bytes, content_type: str,
             extra: dict[str, str] | None = None) -> bytes:
    """A complete response the router itself sends (it closes the connection after)."""
    headers = {"Content-Type": content_type, "Content-Length": str(len(body)),
               "Cache-Control": "private, max-age=0, no-cache, no-store",
               "Connection": "close", **(extra or {})}
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
