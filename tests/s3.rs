//! S3 with the clients people use (S3.md): boto3, the AWS CLI, rclone, s3cmd, the MinIO
//! SDK and pyarrow, each run as a subprocess against a real master over real nginx volumes,
//! plus what only raw requests can show (a PUT cut half way, overwrites under readers,
//! signatures refused, a restart between parts).
//!
//! The Python clients live in a venv that `bin/deps --test` (run by `bin/test`) makes under
//! the build folder; rclone is Debian's. The client scripts are in tests/s3/, each asserting
//! what it sees and exiting non-zero on the first difference.

mod common;

use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

// ---- the cluster ---------------------------------------------------------------------

/// Three volumes and a master on 2 threads, as the other integration tests run it.
fn cluster(extra: &[&str]) -> Cluster {
    let mut args = vec!["-threads", "2"];
    args.extend_from_slice(extra);
    Cluster::new(3, &args)
}

// ---- raw S3 requests -------------------------------------------------------------------

/// What makes a request S3's without signing it (a cluster without `-s3-keys`).
const UNSIGNED: (&str, &str) = ("x-amz-content-sha256", "UNSIGNED-PAYLOAD");

fn s3_get(addr: &str, path: &str) -> Response {
    request(addr, "GET", path, &[UNSIGNED], b"")
}

/// The AWS CLI (its own botocore) puts an empty file with `Expect: 100-continue` and
/// `Content-Length: 0`; answered at once with the final status, it keeps that status line
/// for the next request on the connection, misreads that answer and hangs (`aws s3 sync`
/// of a folder holding an empty file never ended). S3 sends the `100 Continue` first.
#[test]
fn an_empty_put_that_expects_100_continue_gets_it_first() {
    let c = cluster(&[]);
    let mut s = TcpStream::connect(c.addr()).unwrap();
    let head = "PUT /expect/empty HTTP/1.1\r\nHost: mkv\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\n\
                Expect: 100-continue\r\nContent-Length: 0\r\n\r\n";
    s.write_all(head.as_bytes()).unwrap();
    let got = read_raw(&mut s, Duration::from_millis(500));
    let text = got.text();
    assert!(text.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"), "{text}");
    assert!(!got.closed);
    // the connection goes on: a request without Expect, then one with a body
    s.write_all(b"GET /expect?list-type=2 HTTP/1.1\r\nHost: mkv\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\n\r\n")
        .unwrap();
    let text = read_raw(&mut s, Duration::from_millis(500)).text();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n") && text.contains("<Key>empty</Key>"), "{text}");
    // with a body, the 100 comes from the HTTP layer as before, once
    let head = "PUT /expect/full HTTP/1.1\r\nHost: mkv\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\n\
                Expect: 100-continue\r\nContent-Length: 4\r\n\r\n";
    s.write_all(head.as_bytes()).unwrap();
    assert_eq!(read_raw(&mut s, Duration::from_millis(500)).text(), "HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"full").unwrap();
    let text = read_raw(&mut s, Duration::from_millis(500)).text();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert_eq!(s3_get(&c.addr(), "/expect/full").body, b"full");
}
