//! What boto3 really sends, replayed through the whole pipeline: classing, parsing,
//! SigV4 (header and presigned), and the body (plain with a CRC32 header, aws-chunked
//! with a CRC32 trailer). Captured from botocore 1.44.8 at a frozen time, key
//! `mkvtestkey`, secret `mkv/test+secret`, by `botocore_capture.py` beside this file.

use super::error::S3Error;
use super::payload::Payload;
use super::request::{is_s3, parse, Headers, Op};
use super::sigv4::{authenticate, KeyCache, Keys, Request};
use super::xml::{parse_complete, parse_delete};

/// 2024-05-01T12:00:00Z, when botocore signed these.
const SIGNED_AT: i64 = 1714564800;

/// (method, target, headers, body) as botocore 1.44.8 put them on the wire (User-Agent and
/// the unsigned amz-sdk-* headers left out, Host added as its HTTP layer adds it).
type Captured = (&'static str, &'static str, &'static [(&'static str, &'static str)], &'static [u8]);
const WIRE: &[Captured] = &[
    (
        "PUT",
        "/b12/dir/a%20b%2Bc%21~%2A%28%29%27%C3%A9.txt",
        &[("Host", "127.0.0.1:3000"), ("Content-Type", "text/plain"), ("x-amz-meta-color", "blue"), ("Expect", "100-continue"), ("x-amz-checksum-crc32", "NhCmhg=="), ("x-amz-sdk-checksum-algorithm", "CRC32"), ("X-Amz-Date", "20240501T120000Z"), ("X-Amz-Content-SHA256", "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"), ("Authorization", "AWS4-HMAC-SHA256 Credential=mkvtestkey/20240501/us-east-1/s3/aws4_request, SignedHeaders=content-type;host;x-amz-checksum-crc32;x-amz-content-sha256;x-amz-date;x-amz-meta-color;x-amz-sdk-checksum-algorithm, Signature=0b64f3571dacb644e9a93efa59388007568842eecfe087e173a2e3fdecd3e169"), ("Content-Length", "5")],
        b"hello",
    ),
    (
        "GET",
        "/b12?list-type=2&prefix=a%20b%2F&delimiter=%2F&start-after=a%20b%2Fx%2By&encoding-type=url",
        &[("Host", "127.0.0.1:3000"), ("X-Amz-Date", "20240501T120000Z"), ("X-Amz-Content-SHA256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"), ("Authorization", "AWS4-HMAC-SHA256 Credential=mkvtestkey/20240501/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=410c659e16c2a0bf742a3e8d9ab165e628384374cc6ad99141abab230ed7c870")],
        b"",
    ),
    (
        "POST",
        "/b12?delete",
        &[("Host", "127.0.0.1:3000"), ("x-amz-checksum-crc32", "WO8EeQ=="), ("x-amz-sdk-checksum-algorithm", "CRC32"), ("X-Amz-Date", "20240501T120000Z"), ("X-Amz-Content-SHA256", "50a02320ff469d37cfcad85a57102ea6a551df00298a1f74504fb0114c1a9cc8"), ("Authorization", "AWS4-HMAC-SHA256 Credential=mkvtestkey/20240501/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-checksum-crc32;x-amz-content-sha256;x-amz-date;x-amz-sdk-checksum-algorithm, Signature=22e71a83b8ce7070d36ffed470c323c61895556801bb39720a50d1bd57d7442e"), ("Content-Length", "150")],
        b"<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Object><Key>a&amp;b</Key></Object><Object><Key>c d</Key></Object><Quiet>true</Quiet></Delete>",
    ),
    (
        "PUT",
        "/b12/big?partNumber=2&uploadId=u-1",
        &[("Host", "127.0.0.1:3000"), ("Expect", "100-continue"), ("x-amz-checksum-crc32", "4LIfJw=="), ("x-amz-sdk-checksum-algorithm", "CRC32"), ("X-Amz-Date", "20240501T120000Z"), ("X-Amz-Content-SHA256", "ea5683cba58035f4f3b937023cba704f0be4766baca5dd4deee460bdd1091741"), ("Authorization", "AWS4-HMAC-SHA256 Credential=mkvtestkey/20240501/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-checksum-crc32;x-amz-content-sha256;x-amz-date;x-amz-sdk-checksum-algorithm, Signature=ec947ff94dcf68b31602c10d74a2ef410a900ef5aea91e08ea16761afb5c740b"), ("Content-Length", "8")],
        b"part two",
    ),
    (
        "POST",
        "/b12/big?uploadId=u-1",
        &[("Host", "127.0.0.1:3000"), ("X-Amz-Date", "20240501T120000Z"), ("X-Amz-Content-SHA256", "8ff6ae4938a522ce020515f704c6c31ae5c2bc0e3bb6dee0b75bf685fcdf01a5"), ("Authorization", "AWS4-HMAC-SHA256 Credential=mkvtestkey/20240501/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=5d4b6b2fbeadf4d2a7a982be4c9ba5618ad5dbebb82f80e490a4e304c5a248a9"), ("Content-Length", "211")],
        b"<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Part><PartNumber>1</PartNumber><ETag>\"aa\"</ETag></Part><Part><PartNumber>2</PartNumber><ETag>\"bb\"</ETag></Part></CompleteMultipartUpload>",
    ),
    (
        "PUT",
        "/b12/copy",
        &[("Host", "127.0.0.1:3000"), ("x-amz-copy-source", "b12/a%20b%2Bc"), ("X-Amz-Date", "20240501T120000Z"), ("X-Amz-Content-SHA256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"), ("Authorization", "AWS4-HMAC-SHA256 Credential=mkvtestkey/20240501/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-copy-source;x-amz-date, Signature=f2f98639ba446967b69924270217c51256f5c7de1ee538ea42426c4dc1f7404d"), ("Content-Length", "0")],
        b"",
    ),
    (
        "PUT",
        "/b12/over%20https",
        &[("Host", "127.0.0.1:3000"), ("Expect", "100-continue"), ("Transfer-Encoding", "chunked"), ("Content-Encoding", "aws-chunked"), ("X-Amz-Trailer", "x-amz-checksum-crc32"), ("X-Amz-Decoded-Content-Length", "11"), ("x-amz-sdk-checksum-algorithm", "CRC32"), ("X-Amz-Date", "20240501T120000Z"), ("X-Amz-Content-SHA256", "STREAMING-UNSIGNED-PAYLOAD-TRAILER"), ("Authorization", "AWS4-HMAC-SHA256 Credential=mkvtestkey/20240501/us-east-1/s3/aws4_request, SignedHeaders=content-encoding;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-sdk-checksum-algorithm;x-amz-trailer, Signature=edf073de703b12a598142a8da72406ca1c57d206d7acf3c3e7a3e642622ef5fb")],
        b"b\r\nhello world\r\n0\r\nx-amz-checksum-crc32:DUoRhQ==\r\n\r\n",
    ),
    (
        "GET",
        "/b12/k%20with%20space%2Bplus?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=mkvtestkey%2F20240501%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20240501T120000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature=5b7aaa37fa5b8bf7bcebe6a8abc9cf60bade9ba3c96e1a4340085dcce7d522e8",
        &[("Host", "127.0.0.1:3000")],
        b"",
    ),
    (
        "PUT",
        "/b12/k%20with%20space%2Bplus?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=mkvtestkey%2F20240501%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20240501T120000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature=c68ee6cf0401d70c05565cf9a9cfc4bff639742aa14666e21cc8a3149e049811",
        &[("Host", "127.0.0.1:3000")],
        b"",
    ),
];

/// Runs one captured request through everything; returns its Op and the decoded body.
fn replay(
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    now: i64,
) -> Result<(Op, Vec<u8>), S3Error> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let h: Vec<httparse::Header> =
        headers.iter().map(|(n, v)| httparse::Header { name: n, value: v.as_bytes() }).collect();
    let headers = Headers(&h);
    assert!(is_s3(method, path.as_bytes(), query.as_bytes(), &headers), "{method} {target}");
    let op = parse(method, path.as_bytes(), query.as_bytes(), &headers)?;
    let mut keys = Keys::default();
    keys.insert("mkvtestkey", "mkv/test+secret");
    let req = Request { method, path: path.as_bytes(), query: query.as_bytes(), headers };
    let verified = authenticate(&req, Some(&keys), &mut KeyCache::default(), now)?;
    let mut payload = Payload::new(&headers, verified, true)?;
    let mut got = Vec::new();
    for piece in body.chunks(3) {
        if payload.is_chunked() {
            payload.feed(piece, &mut got, usize::MAX)?;
        } else {
            payload.observe(piece)?;
            got.extend_from_slice(piece);
        }
    }
    let done = payload.finish()?;
    assert_eq!(done.len, got.len() as u64);
    assert_eq!(done.md5, Some(crate::md5::Md5::digest(&got)));
    Ok((op, got))
}

#[test]
fn boto3_requests_verify_end_to_end() {
    let mut ops: Vec<(Op, Vec<u8>)> = Vec::new();
    for (method, target, headers, body) in WIRE {
        let (op, decoded) =
            replay(method, target, headers, body, SIGNED_AT + 60).unwrap_or_else(|e| panic!("{method} {target}: {e}"));
        ops.push((op, decoded));
    }
    let key = |op: &Op| match op {
        Op::PutObject { obj, .. } | Op::UploadPart { obj, .. } | Op::GetObject { obj, .. } => obj.key.clone(),
        _ => vec![],
    };
    assert_eq!(key(&ops[0].0), "dir/a b+c!~*()'é.txt".as_bytes());
    assert!(
        matches!(&ops[0].0, Op::PutObject { meta, .. } if meta.content_type() == Some(&b"text/plain"[..]) && meta.get("x-amz-meta-color") == Some(&b"blue"[..]))
    );
    assert!(
        matches!(&ops[1].0, Op::ListObjectsV2 { list, start_after, .. } if list.prefix == b"a b/" && list.url_encoding && start_after == b"a b/x+y")
    );
    assert!(matches!(&ops[2].0, Op::DeleteObjects { .. }));
    let delete = parse_delete(&ops[2].1).unwrap();
    assert!(delete.quiet);
    let keys: Vec<&[u8]> = delete.objects.iter().map(|o| &o.key[..]).collect();
    assert_eq!(keys, [&b"a&b"[..], b"c d"]);
    assert!(matches!(&ops[3].0, Op::UploadPart { part: 2, upload_id, .. } if upload_id == "u-1"));
    assert!(matches!(&ops[4].0, Op::CompleteMultipartUpload { upload_id, .. } if upload_id == "u-1"));
    let listed = parse_complete(&ops[4].1).unwrap();
    assert_eq!(listed.iter().map(|l| (l.number, &l.etag[..])).collect::<Vec<_>>(), [(1, "aa"), (2, "bb")]);
    assert!(
        matches!(&ops[5].0, Op::CopyObject { source, meta: None, .. } if source.bucket == "b12" && source.key == b"a b+c")
    );
    assert_eq!(ops[6].1, b"hello world".to_vec(), "aws-chunked over https, decoded");
    assert_eq!(key(&ops[7].0), b"k with space+plus");
    assert!(matches!(&ops[8].0, Op::PutObject { .. }));
}

#[test]
fn boto3_requests_refused_when_tampered_or_late() {
    let (method, target, headers, body) = WIRE[0];
    let e = replay(method, target, headers, b"jello", SIGNED_AT).unwrap_err();
    assert_eq!(e.code(), "XAmzContentSHA256Mismatch");
    let e = replay(method, &target.replace("dir", "dip"), headers, body, SIGNED_AT).unwrap_err();
    assert_eq!(e.code(), "SignatureDoesNotMatch");
    let e = replay(method, target, headers, body, SIGNED_AT + 16 * 60).unwrap_err();
    assert_eq!(e.code(), "RequestTimeTooSkewed");
    let (method, target, headers, body) = WIRE[6];
    let tampered: Vec<u8> = body.iter().map(|&b| if b == b'w' { b'W' } else { b }).collect();
    assert_eq!(replay(method, target, headers, &tampered, SIGNED_AT).unwrap_err().code(), "BadDigest");
    let (method, target, headers, body) = WIRE[7];
    assert_eq!(replay(method, target, headers, body, SIGNED_AT + 3601).unwrap_err().code(), "AccessDenied");
}
