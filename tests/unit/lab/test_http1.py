"""The router's HTTP/1.1 framing: where heads and bodies end, fed in arbitrary pieces."""

from __future__ import annotations

import pytest
from gpu_lab.http1 import BadMessage, Body, split_head, status_of


def _feed_in_pieces(body: Body, data: bytes, size: int) -> int:
    """Feed data `size` bytes at a time; the offset in data where the body ended."""
    for offset in range(0, len(data), size):
        piece = data[offset:offset + size]
        end = body.feed(piece)
        if body.done:
            return offset + end
    return -1


CHUNKED = (b"7\r\ndata: a\r\n"
           b"10;ext=1\r\ndata: bbbbbbbbb\n\r\n"
           b"0\r\nX-Trailer: t\r\n\r\n")


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
def test_chunked_body_ends_after_its_trailers_however_it_is_split(size: int) -> None:
    tail = b"GET /next HTTP/1.1\r\n\r\n"
    body = Body(chunked=True)
    assert _feed_in_pieces(body, CHUNKED + tail, size) == len(CHUNKED)


def test_content_length_body_ends_at_its_length_and_leaves_the_rest() -> None:
    body = Body(5)
    assert body.feed(b"abc") == 3 and not body.done
    assert body.feed(b"deNEXT") == 2 and body.done
    assert Body(0).done


def test_response_framing_by_status_method_and_headers() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX: y\r\n\r\n"
    head, start = split_head(raw + b"abc")
    assert start == len(raw) and head.get("x") == "y" and status_of(head) == 200
    assert Body.of_response(head, "GET").left == 3
    assert Body.of_response(head, "HEAD").done  # HEAD: no body whatever the length says
    no_content = split_head(b"HTTP/1.1 204 No Content\r\n\r\n")[0]
    assert Body.of_response(no_content, "GET").done
    until_close = split_head(b"HTTP/1.1 200 OK\r\n\r\n")[0]
    reply = Body.of_response(until_close, "GET")
    assert reply.feed(b"x" * 100) == 100 and not reply.done
    chunked = split_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")[0]
    assert Body.of_response(chunked, "GET").chunked


def test_request_framing() -> None:
    post = split_head(b"POST /v1 HTTP/1.1\r\nHost: h\r\ncontent-length: 12\r\n\r\n")[0]
    assert Body.of_request(post).left == 12
    get = split_head(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")[0]
    assert Body.of_request(get).done
    assert get.tokens("Connection") == set()


def test_incomplete_head_waits_and_bad_messages_are_refused() -> None:
    assert split_head(b"GET / HTTP/1.1\r\nHost: h\r\n") is None
    with pytest.raises(BadMessage, match="larger than"):
        split_head(b"GET /" + b"a" * 70000)
    with pytest.raises(BadMessage, match="malformed header"):
        split_head(b"GET / HTTP/1.1\r\nno colon here\r\n\r\n")
    head = split_head(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")[0]
    with pytest.raises(BadMessage, match="Content-Length"):
        Body.of_request(head)
    with pytest.raises(BadMessage, match="chunk size"):
        Body(chunked=True).feed(b"zz\r\n")
    with pytest.raises(BadMessage, match="longer than its size"):
        Body(chunked=True).feed(b"2\r\nabc\r\n")
    bad_status = split_head(b"HTTX 2OO\r\n\r\n")[0]
    with pytest.raises(BadMessage, match="status line"):
        status_of(bad_status)
