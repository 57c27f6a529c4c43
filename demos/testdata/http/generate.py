#!/usr/bin/env python3
"""Writes the request vectors and cases.txt in this directory (see README.md)."""

CASES = [
    ("get.http", b"GET / HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n", 200, "keep"),
    ("head.http", b"HEAD / HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n", 200, "keep"),
    ("get_minimal.http", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 200, "keep"),
    ("get_query.http", b"GET /?q=1&r=2 HTTP/1.1\r\nHost: a\r\n\r\n", 200, "keep"),
    ("get_absolute_form.http", b"GET http://localhost:8080/ HTTP/1.1\r\nHost: localhost:8080\r\n\r\n", 200, "keep"),
    ("get_bare_lf.http", b"GET / HTTP/1.1\nHost: a\n\n", 200, "keep"),
    ("get_leading_crlf.http", b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 200, "keep"),
    ("get_http10.http", b"GET / HTTP/1.0\r\n\r\n", 200, "close"),
    ("get_http10_keepalive.http", b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", 200, "keep"),
    ("get_close.http", b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 200, "close"),
    ("get_browser.http",
     b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: keep-alive\r\n"
     b"sec-ch-ua: \"Chromium\";v=\"124\", \"Not-A.Brand\";v=\"99\"\r\nsec-ch-ua-mobile: ?0\r\n"
     b"sec-ch-ua-platform: \"Linux\"\r\nUpgrade-Insecure-Requests: 1\r\n"
     b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n"
     b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8\r\n"
     b"Sec-Fetch-Site: none\r\nSec-Fetch-Mode: navigate\r\nSec-Fetch-User: ?1\r\nSec-Fetch-Dest: document\r\n"
     b"Accept-Encoding: gzip, deflate, br, zstd\r\nAccept-Language: en-US,en;q=0.9\r\n\r\n", 200, "keep"),
    ("get_with_body.http", b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody", 200, "keep"),
    ("not_found.http", b"GET /missing HTTP/1.1\r\nHost: a\r\n\r\n", 404, "keep"),
    ("head_not_found.http", b"HEAD /missing HTTP/1.1\r\nHost: a\r\n\r\n", 404, "keep"),
    ("post.http", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello", 405, "keep"),
    ("delete.http", b"DELETE / HTTP/1.1\r\nHost: a\r\n\r\n", 405, "keep"),
    ("lowercase_method.http", b"get / HTTP/1.1\r\nHost: a\r\n\r\n", 405, "keep"),
    ("malformed.http", b"GARBAGE\r\n\r\n", 400, "close"),
    ("bad_header_name.http", b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n", 400, "close"),
    ("missing_host.http", b"GET / HTTP/1.1\r\n\r\n", 400, "close"),
    ("two_hosts.http", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "close"),
    ("bad_content_length.http", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5x\r\n\r\nhello", 400, "close"),
    ("conflicting_content_length.http", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400, "close"),
    ("chunked.http", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 501, "close"),
    ("body_too_large.http", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1048577\r\n\r\n", 413, "close"),
    ("http2_version.http", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, "close"),
    ("long_request_line.http", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414, "close"),
    ("big_header.http", b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431, "close"),
    ("many_headers.http",
     b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(1, 101)) + b"\r\n", 431, "close"),
]

HEADER = """\
# Request byte vectors for the http demo, shared by unit tests, integration tests and
# benchmarks. One case a line: file, the status the server answers, and whether the
# connection stays open after the reply (keep) or is closed (close).
"""

if __name__ == "__main__":
    lines = [HEADER]
    for name, data, status, conn in CASES:
        with open(name, "wb") as f:
            f.write(data)
        lines.append(f"{name} {status} {conn}\n")
    with open("cases.txt", "w") as f:
        f.write("".join(lines))
