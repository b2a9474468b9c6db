"""What the client scripts of tests/s3.rs share: the endpoint and keys the test hands over
in the environment, boto3 clients made for it, and assertions that say what differed.

Every script is run by tests/s3.rs with the venv's python (bin/deps); it exits non-zero
(an assertion, an exception) when anything is not exactly as expected.
"""

import contextlib
import hashlib
import http.client
import os
import socket
import sys
import threading
import urllib.parse

import boto3
import botocore
import botocore.httpchecksum
from botocore.config import Config
from botocore.exceptions import ClientError

ENDPOINT = os.environ["MKV_S3_ENDPOINT"]  # http://127.0.0.1:PORT
ACCESS = os.environ.get("AWS_ACCESS_KEY_ID", "mkv")
SECRET = os.environ.get("AWS_SECRET_ACCESS_KEY", "mkv-secret")
ARGS = sys.argv[1:]


def client(**config):
    """A boto3 S3 client on mkv, path style, with botocore's defaults unless `config` says."""
    config.setdefault("s3", {"addressing_style": "path"})
    config.setdefault("retries", {"max_attempts": 1})
    return boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        aws_access_key_id=config.pop("access", ACCESS),
        aws_secret_access_key=config.pop("secret", SECRET),
        region_name="us-east-1",
        config=Config(**config),
    )


@contextlib.contextmanager
def as_over_https():
    """Makes botocore choose the request checksum's location as it does for an https
    endpoint: PutObject and UploadPart then go out `aws-chunked` (Transfer-Encoding:
    chunked, X-Amz-Trailer: x-amz-checksum-crc32, X-Amz-Decoded-Content-Length, the body
    signed as STREAMING-UNSIGNED-PAYLOAD-TRAILER) exactly as over TLS; only the scheme that
    `resolve_request_checksum_algorithm` reads is changed, for the time of that call."""
    original = botocore.httpchecksum.resolve_request_checksum_algorithm

    def https(request, *args, **kwargs):
        url = request["url"]
        request["url"] = "https" + url[len("http"):] if url.startswith("http:") else url
        try:
            return original(request, *args, **kwargs)
        finally:
            request["url"] = url

    botocore.httpchecksum.resolve_request_checksum_algorithm = https
    try:
        yield
    finally:
        botocore.httpchecksum.resolve_request_checksum_algorithm = original


class Wire:
    """Records the headers of every request a boto3 client sends (after signing)."""

    def __init__(self, s3):
        self.sent = []
        s3.meta.events.register("before-send.s3.*", self._seen)

    def _seen(self, request, **kwargs):
        text = lambda v: v.decode() if isinstance(v, bytes) else v
        self.sent.append((request.method, request.url, {k: text(v) for k, v in request.headers.items()}))

    def last(self, method):
        return next(h for m, _, h in reversed(self.sent) if m == method)


class Recorder:
    """A TCP relay in front of mkv that keeps the head of every request passing through
    (method, target, headers with lower-case names), to show what a client really sends."""

    def __init__(self, target=os.environ.get("MKV_S3_HOST")):
        self.target = target.rsplit(":", 1)
        self.heads = []
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self._server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection((self.target[0], int(self.target[1])))
            threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._relay, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _relay(src, dst):
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def _requests(self, src, dst):
        """Relays requests, reading each head and stepping over its body by its framing."""
        buf = b""

        def more():
            nonlocal buf
            data = src.recv(1 << 16)
            if not data:
                raise EOFError
            dst.sendall(data)
            buf += data

        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    more()
                head, buf = buf.split(b"\r\n\r\n", 1)
                line, *fields = head.decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, v in (f.split(":", 1) for f in fields)}
                method, target, _ = line.split(" ", 2)
                with self._lock:
                    self.heads.append((method, target, headers))
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    while True:
                        while b"\r\n" not in buf:
                            more()
                        size_line, buf = buf.split(b"\r\n", 1)
                        size = int(size_line.split(b";")[0], 16)
                        if size == 0:
                            while b"\r\n\r\n" not in b"\r\n" + buf:
                                more()
                            buf = (b"\r\n" + buf).split(b"\r\n\r\n", 1)[1]
                            break
                        while len(buf) < size + 2:
                            more()
                        buf = buf[size + 2:]
                else:
                    left = int(headers.get("content-length", "0"))
                    while len(buf) < left:
                        more()
                    buf = buf[left:]
        except (EOFError, OSError):
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def find(self, method, target_part="", **headers):
        """The heads of `method` whose target holds `target_part` and that carry `headers`
        (names with `_` for `-`, values compared case-insensitively)."""
        want = {k.replace("_", "-"): v.lower() for k, v in headers.items()}
        with self._lock:
            return [h for m, t, h in self.heads if m == method and target_part in t
                    and all(h.get(k, "").lower() == v for k, v in want.items())]


def error_of(fn, *args, **kwargs):
    """Calls fn, which must fail with an S3 error: (HTTP status, error code)."""
    try:
        fn(*args, **kwargs)
    except ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"]
    raise AssertionError(f"{fn.__name__}{args}{kwargs} succeeded; an S3 error was expected")


def fetch(url, method="GET", data=None):
    """(status, body, S3 error code or None) of a plain HTTP request, as curl sends it: no
    header but Host, Accept-Encoding and the body's length (urllib would add a
    Content-Type, which a SigV2 signature covers)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.netloc, timeout=20)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, target, body=data)
        r = conn.getresponse()
        text = r.read()
    finally:
        conn.close()
    if r.status < 300:
        return r.status, text, None
    text = text.decode()
    code = text.split("<Code>")[1].split("</Code>")[0] if "<Code>" in text else None
    return r.status, text, code


def eq(got, want, what=""):
    assert got == want, f"{what}: got {got!r}, want {want!r}"


def md5(data):
    return hashlib.md5(data).hexdigest()


def multipart_etag(parts):
    """S3's ETag of a multipart object: md5 of the parts' binary MD5s, then -N."""
    digests = b"".join(hashlib.md5(p).digest() for p in parts)
    return f'"{hashlib.md5(digests).hexdigest()}-{len(parts)}"'


def body(s3, bucket, key, **kwargs):
    return s3.get_object(Bucket=bucket, Key=key, **kwargs)["Body"].read()


def done():
    print("OK", flush=True)
