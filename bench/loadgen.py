#!/usr/bin/env python3
"""Load generator for what wrk cannot do: a counted preload of keys, and the
PUT -> GET (follow the 302 to the volume) -> DELETE cycle.

Standard library only. Each client is its own process (no GIL between clients) with
raw keep-alive sockets and a minimal HTTP/1.1 reader (http.client's header parsing
would cost more CPU than the servers under test). Prints one JSON line on stdout.

  loadgen.py load  --master H:P --prefix /bench/k --keys 100000 [--procs 16] [--size 64]
  loadgen.py cycle --master H:P --clients 16 --duration 10 [--size 1024]
  loadgen.py cycle --direct H:P --clients 16 --duration 10 [--size 1024]
"""
import argparse
import json
import multiprocessing as mp
import os
import socket
import sys
import time


class HttpError(Exception):
    pass


class Conn:
    """One keep-alive HTTP/1.1 connection; reconnects once if the peer closed it."""

    def __init__(self, hostport):
        host, port = hostport.rsplit(":", 1)
        self.addr = (host, int(port))
        self.hostport = hostport
        self.sock = None
        self.buf = b""

    def _connect(self):
        self.sock = socket.create_connection(self.addr, timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def request(self, method, path, body=None):
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.hostport}\r\n"
        if body is not None:
            head += f"Content-Length: {len(body)}\r\n"
        data = (head + "\r\n").encode() + (body or b"")
        for attempt in (0, 1):
            reused = self.sock is not None
            if not reused:
                self._connect()
            try:
                self.sock.sendall(data)
                return self._response(method)
            except (ConnectionError, HttpError):
                self.close()
                # only a pooled connection the server may have closed is retried, once
                if not reused or attempt == 1:
                    raise

    def _fill(self):
        chunk = self.sock.recv(262144)
        if not chunk:
            raise HttpError("connection closed by peer")
        self.buf += chunk

    def _response(self, method):
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            self._fill()
        head = self.buf[:end].decode("latin-1").split("\r\n")
        self.buf = self.buf[end + 4:]
        parts = head[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise HttpError(f"bad status line {head[0]!r}")
        status = int(parts[1])
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if 100 <= status < 200:
            return self._response(method)
        if method == "HEAD" or status in (204, 304):
            n = 0
        elif "content-length" in headers:
            n = int(headers["content-length"])
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            return status, headers, self._chunked()
        else:
            raise HttpError(f"no framing in answer to {method} (status {status})")
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, body

    def _chunked(self):
        out = []
        while True:
            while b"\r\n" not in self.buf:
                self._fill()
            line, _, self.buf = self.buf.partition(b"\r\n")
            size = int(line.split(b";")[0], 16)
            while len(self.buf) < size + 2:
                self._fill()
            out.append(self.buf[:size])
            self.buf = self.buf[size + 2:]
            if size == 0:
                return b"".join(out)


def split_url(url):
    if not url.startswith("http://"):
        raise HttpError(f"unexpected Location {url!r}")
    rest = url[len("http://"):]
    slash = rest.find("/")
    return (rest, "/") if slash < 0 else (rest[:slash], rest[slash:])


def expect(what, status, want):
    if status != want:
        raise HttpError(f"{what}: status {status}, expected {want}")


# ---- load -----------------------------------------------------------------------------

def load_worker(args, proc, out):
    conn = Conn(args.master)
    body = (b"%d" % proc).ljust(args.size, b".")
    ok = failed = 0
    first_error = None
    for i in range(proc, args.keys, args.procs):
        try:
            status, _, _ = conn.request("PUT", f"{args.prefix}{i}", body)
        except (OSError, HttpError) as e:
            status, conn = str(e), Conn(args.master)
        if status == 201:
            ok += 1
        else:
            failed += 1
            first_error = first_error or f"PUT {args.prefix}{i}: {status}"
    out.put((ok, failed, first_error))


def cmd_load(args):
    out = mp.Queue()
    t0 = time.monotonic()
    procs = [mp.Process(target=load_worker, args=(args, p, out)) for p in range(args.procs)]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    dt = time.monotonic() - t0
    ok = sum(r[0] for r in results)
    failed = sum(r[1] for r in results)
    errors = [r[2] for r in results if r[2]]
    print(json.dumps({"ok": ok, "failed": failed, "seconds": round(dt, 2),
                      "per_s": round(ok / dt, 1), "first_error": errors[0] if errors else None}))
    return 0 if failed == 0 else 1


# ---- cycle ----------------------------------------------------------------------------

def cycle_worker(args, wid, start_at, out):
    body = os.urandom(args.size)
    run = args.run_id
    conns = {}

    def conn(hostport):
        c = conns.get(hostport)
        if c is None:
            c = conns[hostport] = Conn(hostport)
        return c

    target = args.direct or args.master
    cycles = errors = 0
    first_error = None
    n = 0
    while time.time() < start_at:
        time.sleep(0.001)
    deadline = start_at + args.duration
    while time.time() < deadline:
        n += 1
        try:
            if args.direct:
                path = f"/bench-cycle/{run}/{wid}/{n}"
                st, _, _ = conn(target).request("PUT", path, body)
                expect("PUT", st, 201)
                st, _, got = conn(target).request("GET", path)
                expect("GET", st, 200)
                if got != body:
                    raise HttpError(f"GET {path}: {len(got)} bytes differ from the {len(body)} put")
                st, _, _ = conn(target).request("DELETE", path)
                expect("DELETE", st, 204)
            else:
                key = f"/cycle/{run}/{wid}/{n}"
                st, _, _ = conn(target).request("PUT", key, body)
                expect("PUT", st, 201)
                st, h, _ = conn(target).request("GET", key)
                expect("GET", st, 302)
                vol, path = split_url(h.get("location", ""))
                st, _, got = conn(vol).request("GET", path)
                expect("GET (followed)", st, 200)
                if got != body:
                    raise HttpError(f"GET {key} via {vol}: {len(got)} bytes differ from the {len(body)} put")
                st, _, _ = conn(target).request("DELETE", key)
                expect("DELETE", st, 204)
            cycles += 1
        except (OSError, HttpError, ValueError) as e:
            errors += 1
            first_error = first_error or f"{type(e).__name__}: {e}"
            for c in conns.values():
                c.close()
            conns.clear()
    out.put((cycles, errors, first_error))


def cmd_cycle(args):
    if not args.run_id:
        args.run_id = os.urandom(4).hex()
    out = mp.Queue()
    start_at = time.time() + 0.5 + 0.02 * args.clients
    procs = [mp.Process(target=cycle_worker, args=(args, w, start_at, out)) for w in range(args.clients)]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    cycles = sum(r[0] for r in results)
    errors = sum(r[1] for r in results)
    firsts = [r[2] for r in results if r[2]]
    print(json.dumps({"cycles": cycles, "errors": errors, "seconds": args.duration,
                      "per_s": round(cycles / args.duration, 1),
                      "first_error": firsts[0] if firsts else None}))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    ld = sub.add_parser("load", help="PUT keys PREFIX0..PREFIX{N-1} through the master")
    ld.add_argument("--master", required=True)
    ld.add_argument("--prefix", default="/bench/k")
    ld.add_argument("--keys", type=int, default=100000)
    ld.add_argument("--procs", type=int, default=16)
    ld.add_argument("--size", type=int, default=64)
    cy = sub.add_parser("cycle", help="PUT -> GET (follow) -> DELETE per key, as cycles/s")
    g = cy.add_mutually_exclusive_group(required=True)
    g.add_argument("--master", help="through mkv (the GET follows the redirect)")
    g.add_argument("--direct", help="the same cycle straight against one volume")
    cy.add_argument("--clients", type=int, default=16)
    cy.add_argument("--duration", type=float, default=10)
    cy.add_argument("--size", type=int, default=1024)
    cy.add_argument("--run-id", default="")
    args = ap.parse_args()
    return cmd_load(args) if args.cmd == "load" else cmd_cycle(args)


if __name__ == "__main__":
    sys.exit(main())
