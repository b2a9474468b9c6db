use super::*;
use crate::s3::sigv4::hex;

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const STAMP: &str = "20130524T000000Z";

fn chain(seed: [u8; 32]) -> ChunkChain {
    ChunkChain::for_test(SECRET, STAMP, "us-east-1", seed)
}

/// Feeds `pieces` as the network would, handing the decoder at most `max_out` bytes of
/// room per call (the caller drains `out` between calls).
fn feed<'a>(
    d: &mut AwsChunked,
    pieces: impl IntoIterator<Item = &'a [u8]>,
    max_out: usize,
) -> Result<Vec<u8>, S3Error> {
    let mut got = Vec::new();
    let mut out = Vec::new();
    for piece in pieces {
        let mut pos = 0;
        loop {
            out.clear();
            pos += d.decode(&piece[pos..], &mut out, max_out)?;
            got.extend_from_slice(&out);
            if pos == piece.len() {
                break;
            }
            assert_eq!(out.len(), max_out, "stopped early without a full output");
        }
    }
    Ok(got)
}

/// A body as a client signs it: each chunk, the final one, then the trailers.
fn signed_body(chunks: &[&[u8]], trailers: Option<&[(&str, &str)]>, signer: &mut ChunkChain) -> Vec<u8> {
    let mut body = Vec::new();
    for data in chunks.iter().chain([&&b""[..]]) {
        let sig = hex(&signer.sign_chunk(data));
        body.extend_from_slice(format!("{:x};chunk-signature={sig}\r\n", data.len()).as_bytes());
        if !data.is_empty() {
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
        }
    }
    if let Some(trailers) = trailers {
        let mut canonical = Vec::new();
        for (n, v) in trailers {
            body.extend_from_slice(format!("{n}:{v}\r\n").as_bytes());
            canonical.extend_from_slice(format!("{n}:{v}\n").as_bytes());
        }
        let sig = hex(&signer.sign_trailer(&canonical));
        body.extend_from_slice(format!("x-amz-trailer-signature:{sig}\r\n").as_bytes());
    }
    body.extend_from_slice(b"\r\n");
    body
}

/// boto3's unsigned body over https: STREAMING-UNSIGNED-PAYLOAD-TRAILER with a CRC32 trailer.
const UNSIGNED: &[u8] = b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-amz-checksum-crc32:DUoRhQ==\r\n\r\n";

#[test]
fn unsigned_at_every_split_and_piece_size() {
    for max_out in [1, 2, 3, usize::MAX] {
        for split in 0..=UNSIGNED.len() {
            let mut d = AwsChunked::new(false, true, None);
            let got = feed(&mut d, [&UNSIGNED[..split], &UNSIGNED[split..]], max_out).unwrap();
            assert_eq!(got, b"hello world", "split {split}, max_out {max_out}");
            assert!(d.is_done());
            assert_eq!(d.trailers(), [("x-amz-checksum-crc32".to_string(), "DUoRhQ==".to_string())]);
            assert_eq!(d.decoded(), 11);
        }
        for step in 1..UNSIGNED.len() {
            let mut d = AwsChunked::new(false, true, None);
            assert_eq!(feed(&mut d, UNSIGNED.chunks(step), max_out).unwrap(), b"hello world", "step {step}");
            assert!(d.is_done());
        }
    }
    // not done until the last empty line
    let mut d = AwsChunked::new(false, true, None);
    feed(&mut d, [&UNSIGNED[..UNSIGNED.len() - 1]], usize::MAX).unwrap();
    assert!(!d.is_done());
}

#[test]
fn signed_at_every_split_point() {
    let seed = [7u8; 32];
    let trailers: &[(&str, &str)] = &[("x-amz-checksum-crc32c", "yZRlqg==")];
    for trailer in [None, Some(trailers)] {
        let body = signed_body(&[b"hello", b" ", b"world!"], trailer, &mut chain(seed));
        for split in 0..=body.len() {
            let mut d = AwsChunked::new(true, trailer.is_some(), Some(chain(seed)));
            let got = feed(&mut d, [&body[..split], &body[split..]], 4).unwrap();
            assert_eq!(got, b"hello world!", "split {split}");
            assert!(d.is_done());
        }
    }
}

#[test]
fn signatures_are_checked() {
    let seed = [7u8; 32];
    let trailers: &[(&str, &str)] = &[("x-amz-checksum-crc32", "DUoRhQ==")];
    let body = signed_body(&[b"hello", b" world"], Some(trailers), &mut chain(seed));
    let decode = |body: &[u8], verify: bool| {
        let mut d = AwsChunked::new(true, true, verify.then(|| chain(seed)));
        feed(&mut d, [body], usize::MAX).map(|_| d.trailers().to_vec())
    };
    assert!(decode(&body, true).is_ok());
    // a byte of data, the trailer value, a chunk signature, the trailer signature
    let flip = |from: &[u8], to: &[u8]| {
        let text = String::from_utf8(body.clone()).unwrap();
        text.replacen(std::str::from_utf8(from).unwrap(), std::str::from_utf8(to).unwrap(), 1).into_bytes()
    };
    assert_eq!(decode(&flip(b"hello", b"jello"), true), Err(S3Error::SignatureDoesNotMatch));
    assert_eq!(decode(&flip(b"DUoRhQ==", b"DUoRhR=="), true), Err(S3Error::SignatureDoesNotMatch));
    let first_sig = &body[18..82];
    assert_eq!(decode(&flip(first_sig, &[b'0'; 64]), true), Err(S3Error::SignatureDoesNotMatch));
    let tsig = body.windows(24).position(|w| w == b"x-amz-trailer-signature:").unwrap() + 24;
    assert_eq!(decode(&flip(&body[tsig..tsig + 64], &[b'a'; 64]), true), Err(S3Error::SignatureDoesNotMatch));
    // without -s3-keys the framing is still checked, the signatures are not
    assert!(decode(&flip(b"hello", b"jello"), false).is_ok());
    // a signed trailer body must end with its signature
    let cut = [&body[..tsig - 24], b"\r\n"].concat();
    assert!(matches!(decode(&cut, false), Err(S3Error::MalformedTrailer(_))));
}

/// S3 docs, the streaming "Example: PUT Object": 64 KiB and 1 KiB of `a`, with the
/// published chunk signatures chained from the published seed.
#[test]
fn aws_streaming_example() {
    let seed = hex32(b"4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9").unwrap();
    let mut body = Vec::new();
    for (size, sig) in [
        (65536, "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"),
        (1024, "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"),
        (0, "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"),
    ] {
        body.extend_from_slice(format!("{size:x};chunk-signature={sig}\r\n").as_bytes());
        body.extend_from_slice(&vec![b'a'; size]);
        body.extend_from_slice(b"\r\n");
    }
    assert_eq!(body.len(), 66824, "the example's Content-Length");
    for step in [1, 7, 4096, body.len()] {
        let mut d = AwsChunked::new(true, false, Some(chain(seed)));
        let got = feed(&mut d, body.chunks(step), 8192).unwrap();
        assert!(got.len() == 66560 && got.iter().all(|&b| b == b'a') && d.is_done(), "step {step}");
    }
    body[100] = b'b';
    let mut d = AwsChunked::new(true, false, Some(chain(seed)));
    assert_eq!(feed(&mut d, [&body[..]], usize::MAX), Err(S3Error::SignatureDoesNotMatch));
}

#[test]
fn bad_framing() {
    let sig = "0".repeat(64);
    let unsigned: &[&[u8]] = &[
        b"5;chunk-signature=00\r\nhello\r\n0\r\n\r\n", // a signature where none is expected
        b"5;ext=1\r\nhello\r\n0\r\n\r\n",
        b"zz\r\n",
        b"\r\n",
        b"-1\r\n",
        b"5\nhello\r\n0\r\n\r\n",
        b"5\r\nhelloXX0\r\n\r\n",
        b"5\r\nhello\r\n0\r\n\r\nextra",
        b"12345678901234567\r\n",
        b"0\r\nx-amz-checksum-crc32 DUoRhQ==\r\n\r\n",
        b"0\r\n:nameless\r\n\r\n",
        b"0\r\nx-amz-trailer-signature:00\r\n\r\n",
    ];
    for bad in unsigned {
        let mut d = AwsChunked::new(false, true, None);
        assert!(feed(&mut d, [*bad], usize::MAX).is_err(), "{:?}", String::from_utf8_lossy(bad));
    }
    let signed = [
        "5\r\nhello\r\n".to_string(),                            // no signature
        format!("5;chunk-signature={}\r\nhello\r\n", &sig[1..]), // 63 digits
        format!("5;chunk-sig={sig}\r\nhello\r\n"),
        format!("0;chunk-signature={sig}\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n"), // no trailer announced
    ];
    for bad in &signed {
        let mut d = AwsChunked::new(true, false, None);
        assert!(feed(&mut d, [bad.as_bytes()], usize::MAX).is_err(), "{bad}");
    }
    // hard caps: a line that never ends, too many trailers
    let mut d = AwsChunked::new(false, true, None);
    assert_eq!(feed(&mut d, vec![&b"1"[..]; MAX_LINE + 1], usize::MAX), Err(LONG_LINE));
    let many: String = (0..=MAX_TRAILERS).map(|i| format!("x-amz-meta-{i}:v\r\n")).collect();
    let mut d = AwsChunked::new(false, true, None);
    assert_eq!(feed(&mut d, [format!("0\r\n{many}\r\n").as_bytes()], usize::MAX), Err(BAD_TRAILER));
    // upper-case hex sizes are hex all the same; trailer names are read case-insensitively
    let mut d = AwsChunked::new(false, true, None);
    assert_eq!(
        feed(&mut d, [&b"A\r\n0123456789\r\n0\r\nX-Amz-Checksum-CRC32: AAAAAA== \r\n\r\n"[..]], usize::MAX).unwrap(),
        b"0123456789"
    );
    assert_eq!(d.trailers(), [("x-amz-checksum-crc32".to_string(), "AAAAAA==".to_string())]);
}
