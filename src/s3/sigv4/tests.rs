use super::*;

const AK: &str = "AKIAIOSFODNN7EXAMPLE";
const SK: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
/// 2013-05-24T00:00:00Z, the time of the S3 documentation's examples.
const T2013: i64 = 1369353600;

fn keys() -> Keys {
    let mut k = Keys::default();
    k.insert(AK, SK);
    k
}

fn hdrs<'a>(list: &'a [(&'a str, &'a str)]) -> Vec<httparse::Header<'a>> {
    list.iter().map(|(n, v)| httparse::Header { name: n, value: v.as_bytes() }).collect()
}

fn auth(method: &str, target: &str, headers: &[(&str, &str)], now: i64) -> Result<Verified, S3Error> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let h = hdrs(headers);
    let req = Request { method, path: path.as_bytes(), query: query.as_bytes(), headers: Headers(&h) };
    authenticate(&req, Some(&keys()), &mut KeyCache::default(), now)
}

fn authorization(signed: &str, signature: &str) -> String {
    format!("AWS4-HMAC-SHA256 Credential={AK}/20130524/us-east-1/s3/aws4_request,SignedHeaders={signed},Signature={signature}")
}

/// The aws-sig-v4-test-suite's requests (service "service", not S3's rules, but the same
/// canonical request, string to sign and key derivation).
fn suite(method: &str, target: &str) -> String {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let h = hdrs(&[("Host", "example.amazonaws.com"), ("X-Amz-Date", "20150830T123600Z")]);
    let creq = canonical_request(
        method,
        path,
        &canonical_query(query.as_bytes(), false).unwrap(),
        &canonical_headers(&Headers(&h), &["host", "x-amz-date"]),
        "host;x-amz-date",
        EMPTY_SHA256.as_bytes(),
    );
    let key = signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20150830", "us-east-1", "service");
    hex(&hmac(&key, string_to_sign("20150830T123600Z", "20150830/us-east-1/service/aws4_request", &creq).as_bytes()))
}

#[test]
fn aws_sigv4_test_suite() {
    assert_eq!(suite("GET", "/"), "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31", "get-vanilla");
    assert_eq!(suite("POST", "/"), "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b", "post-vanilla");
    assert_eq!(
        suite("GET", "/?Param2=value2&Param1=value1"),
        "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        "get-vanilla-query-order-key-case"
    );
    assert_eq!(
        suite("GET", "/?Param1=value2&Param1=value1"),
        "5772eed61e12b33fae39ee5e7012498b51d56abc0abb7c60486157bd471c4694",
        "get-vanilla-query-order-value"
    );
    assert_eq!(
        suite("GET", "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"),
        "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f",
        "get-unreserved"
    );
}

#[test]
fn canonical_pieces() {
    let h = hdrs(&[("My-Header1", "  a   b  c "), ("my-header1", "d"), ("Host", "h")]);
    assert_eq!(canonical_headers(&Headers(&h), &["host", "my-header1"]), "host:h\nmy-header1:a b c,d\n");
    assert_eq!(canonical_query(b"uploads&b=%2f%7e+x&a=1", false).unwrap(), "a=1&b=%2F~%20x&uploads=");
    assert_eq!(canonical_query(b"X-Amz-Signature=s&X-Amz-Date=d", true).unwrap(), "X-Amz-Date=d");
    let mut s = String::new();
    uri_encode(&mut s, "/a b/ü$!".as_bytes(), false);
    assert_eq!(s, "/a%20b/%C3%BC%24%21");
}

/// S3 docs, "Example: GET Object" (a Range, the empty body's hash).
#[test]
fn s3_get_object_example() {
    let a = authorization(
        "host;range;x-amz-content-sha256;x-amz-date",
        "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
    );
    let h = [
        ("Host", "examplebucket.s3.amazonaws.com"),
        ("Range", "bytes=0-9"),
        ("x-amz-content-sha256", EMPTY_SHA256),
        ("x-amz-date", "20130524T000000Z"),
        ("Authorization", a.as_str()),
    ];
    let v = auth("GET", "/test.txt", &h, T2013 + 60).unwrap();
    assert_eq!(v.access_key.as_deref(), Some(AK));
    assert_eq!(v.content, ContentSha256::Sha256(hex32(EMPTY_SHA256.as_bytes()).unwrap()));
    assert!(v.chain.is_none());
    // one byte of the range changed
    let mut h2 = h;
    h2[1].1 = "bytes=0-8";
    assert_eq!(auth("GET", "/test.txt", &h2, T2013).unwrap_err(), S3Error::SignatureDoesNotMatch);
    assert_eq!(auth("GET", "/test.txt", &h, T2013 + MAX_SKEW + 1).unwrap_err(), S3Error::RequestTimeTooSkewed);
    assert_eq!(auth("GET", "/test.txt", &h, T2013 - MAX_SKEW - 1).unwrap_err(), S3Error::RequestTimeTooSkewed);
    let other = a.replace(AK, "AKIDUNKNOWN");
    let mut h3 = h;
    h3[4].1 = &other;
    assert_eq!(auth("GET", "/test.txt", &h3, T2013).unwrap_err(), S3Error::InvalidAccessKeyId);
}

/// S3 docs, "Example: PUT Object": a `$` in the key, a Date header besides x-amz-date.
#[test]
fn s3_put_object_example() {
    let a = authorization(
        "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
        "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
    );
    let body_hash = hex(&Sha256::digest(b"Welcome to Amazon S3."));
    let h = [
        ("Host", "examplebucket.s3.amazonaws.com"),
        ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
        ("Authorization", a.as_str()),
        ("x-amz-date", "20130524T000000Z"),
        ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        ("x-amz-content-sha256", body_hash.as_str()),
    ];
    assert_eq!(body_hash, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
    // sent encoded or not, the canonical path is /test%24file.text
    assert!(auth("PUT", "/test%24file.text", &h, T2013).is_ok());
    assert!(auth("PUT", "/test$file.text", &h, T2013).is_ok());
    assert_eq!(auth("PUT", "/test%2524file.text", &h, T2013).unwrap_err(), S3Error::SignatureDoesNotMatch);
    // an x-amz-* header added after signing would change what the request does (a copy
    // source turns the PUT into a copy of another object): refused; another header is not
    let unsigned = S3Error::AccessDenied("There were headers present in the request which were not signed");
    for added in [("x-amz-copy-source", "/other/secret"), ("X-Amz-Meta-Evil", "1"), ("x-amz-acl", "public-read")] {
        let more: Vec<_> = h.iter().copied().chain([added]).collect();
        assert_eq!(auth("PUT", "/test$file.text", &more, T2013).unwrap_err(), unsigned, "{added:?}");
    }
    let more: Vec<_> = h.iter().copied().chain([("Content-Type", "text/plain"), ("x-amzn-trace-id", "1")]).collect();
    assert!(auth("PUT", "/test$file.text", &more, T2013).is_ok());
}

/// S3 docs, "Example: GET Bucket Lifecycle" and "Example: Get Bucket (List Objects)".
#[test]
fn s3_query_examples() {
    let signed = "host;x-amz-content-sha256;x-amz-date";
    for (target, sig) in [
        ("/?lifecycle", "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"),
        ("/?max-keys=2&prefix=J", "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"),
        ("/?prefix=J&max-keys=2", "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"),
    ] {
        let a = authorization(signed, sig);
        let h = [
            ("Host", "examplebucket.s3.amazonaws.com"),
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("Authorization", a.as_str()),
        ];
        assert!(auth("GET", target, &h, T2013).is_ok(), "{target}");
    }
}

/// S3 docs, "Example: a presigned URL" (GET /test.txt, valid for 86400 s).
#[test]
fn s3_presigned_example() {
    let target = "/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";
    let h = [("Host", "examplebucket.s3.amazonaws.com")];
    let v = auth("GET", target, &h, T2013 + 86400).unwrap();
    let more = [h[0], ("x-amz-copy-source", "/other/secret")];
    assert_eq!(
        auth("GET", target, &more, T2013).unwrap_err(),
        S3Error::AccessDenied("There were headers present in the request which were not signed")
    );
    assert_eq!(v.access_key.as_deref(), Some(AK));
    assert_eq!(v.content, ContentSha256::Absent);
    assert_eq!(auth("GET", target, &h, T2013 + 86401).unwrap_err(), S3Error::AccessDenied("Request has expired"));
    assert_eq!(
        auth("GET", target, &h, T2013 - MAX_SKEW - 1).unwrap_err(),
        S3Error::AccessDenied("Request is not valid yet")
    );
    assert_eq!(
        auth("GET", &target.replace("test.txt", "test2.txt"), &h, T2013).unwrap_err(),
        S3Error::SignatureDoesNotMatch
    );
    assert_eq!(
        auth("GET", &target.replace("Expires=86400", "Expires=86401"), &h, T2013).unwrap_err(),
        S3Error::SignatureDoesNotMatch
    );
    assert!(matches!(
        auth("GET", &target.replace("Expires=86400", "Expires=604801"), &h, T2013),
        Err(S3Error::AuthorizationQueryParametersError(_))
    ));
    assert!(matches!(
        auth("GET", &target.replace("&X-Amz-SignedHeaders=host", ""), &h, T2013),
        Err(S3Error::AuthorizationQueryParametersError(_))
    ));
    // a presigned URL sent with an Authorization header too: S3's 400, not a 403
    let both = [h[0], ("Authorization", "AWS4-HMAC-SHA256 Credential=x")];
    assert!(
        matches!(auth("GET", target, &both, T2013), Err(S3Error::InvalidArgument(why)) if why.starts_with("Only one auth"))
    );
}

/// S3 docs, "Example: PUT Object" of the streaming upload: the seed signature, then the
/// chunk signatures of 64 KiB of `a`, 1 KiB of `a` and the final empty chunk.
#[test]
fn s3_streaming_example() {
    let a = authorization(
        "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class",
        "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9",
    );
    let h = [
        ("Host", "s3.amazonaws.com"),
        ("x-amz-date", "20130524T000000Z"),
        ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        ("Authorization", a.as_str()),
        ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
        ("Content-Encoding", "aws-chunked"),
        ("x-amz-decoded-content-length", "66560"),
        ("Content-Length", "66824"),
    ];
    let v = auth("PUT", "/examplebucket/chunkObject.txt", &h, T2013).unwrap();
    assert_eq!(v.content, ContentSha256::Streaming { signed: true, trailer: false });
    let mut chain = v.chain.unwrap();
    let sig = |s: &str| hex32(s.as_bytes()).unwrap();
    let hash = |n: usize| -> [u8; 32] { Sha256::digest(vec![b'a'; n]).into() };
    let bad = sig("0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497");
    assert_eq!(chain.verify_chunk(&hash(65536), &bad), Err(S3Error::SignatureDoesNotMatch));
    chain.verify_chunk(&hash(65536), &sig("ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648")).unwrap();
    chain.verify_chunk(&hash(1024), &sig("0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497")).unwrap();
    chain.verify_chunk(&hash(0), &sig("b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9")).unwrap();
    // the test signer agrees with the published chain
    let mut mine = ChunkChain::for_test(
        SK,
        "20130524T000000Z",
        "us-east-1",
        sig("4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"),
    );
    assert_eq!(
        hex(&mine.sign_chunk(&[b'a'; 65536])),
        "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"
    );
}

#[test]
fn refusals() {
    let none: &[(&str, &str)] = &[("Host", "h")];
    assert!(matches!(auth("GET", "/b/k", none, T2013), Err(S3Error::AccessDenied(_))));
    // Signature Version 2 is sigv2's (tested there): an unknown key is refused as such
    assert_eq!(
        auth("GET", "/b/k", &[("Authorization", "AWS AKID:c2ln")], T2013).unwrap_err(),
        S3Error::InvalidAccessKeyId
    );
    assert_eq!(
        auth("GET", "/b/k?AWSAccessKeyId=a&Signature=s&Expires=1", none, T2013).unwrap_err(),
        S3Error::InvalidAccessKeyId
    );
    for bad in [
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request",
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/ec2/aws4_request,SignedHeaders=host,Signature=00",
        "AWS4-HMAC-SHA256 Credential=/20130524/us-east-1/s3/aws4_request,SignedHeaders=host,Signature=00",
        "AWS4-HMAC-SHA256 Foo=bar",
    ] {
        assert!(matches!(auth("GET", "/b/k", &[("Authorization", bad)], T2013), Err(S3Error::AuthorizationHeaderMalformed(_))), "{bad}");
    }
    let a = authorization("host;x-amz-date", &"0".repeat(64));
    let h = [("Host", "h"), ("x-amz-date", "20130524T000000Z"), ("Authorization", a.as_str())];
    assert!(matches!(auth("GET", "/b/k", &h, T2013), Err(S3Error::InvalidRequest(_))));
    let h = [
        ("Host", "h"),
        ("x-amz-date", "20130524T000000Z"),
        ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
        ("Authorization", a.as_str()),
    ];
    assert!(matches!(auth("GET", "/b/k", &h, T2013), Err(S3Error::AccessDenied(_))));
    let h = [
        ("Host", "h"),
        ("x-amz-date", "20130525T000000Z"),
        ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
        ("Authorization", a.as_str()),
    ];
    assert_eq!(auth("GET", "/b/k", &h, T2013 + 86400).unwrap_err().code(), "AuthorizationHeaderMalformed");
    // without -s3-keys anything goes, and the body's promise is still read
    let h = hdrs(&[("x-amz-content-sha256", "STREAMING-UNSIGNED-PAYLOAD-TRAILER")]);
    let req = Request { method: "PUT", path: b"/b/k", query: b"", headers: Headers(&h) };
    let v = authenticate(&req, None, &mut KeyCache::default(), 0).unwrap();
    assert_eq!((v.access_key, v.content), (None, ContentSha256::Streaming { signed: false, trailer: true }));
    let h = hdrs(&[("x-amz-content-sha256", "abc")]);
    let req = Request { method: "PUT", path: b"/b/k", query: b"", headers: Headers(&h) };
    assert!(matches!(authenticate(&req, None, &mut KeyCache::default(), 0), Err(S3Error::InvalidArgument(_))));
}

#[test]
fn secrets_stay_secret() {
    let k = Keys::parse("# mkv keys\n\nAKID1 topsecret1\n  AKID2\tTOPSECRET2  \n").unwrap();
    assert_eq!(k.len(), 2);
    let shown = format!("{k:?} {:?}", k.0.get("AKID1"));
    assert!(!shown.contains("topsecret1") && !shown.contains("TOPSECRET2"), "{shown}");
    let chain = ChunkChain::for_test("topsecret1", "20130524T000000Z", "us-east-1", [0; 32]);
    let shown = format!("{chain:?}");
    assert!(!shown.contains("topsecret1") && !shown.contains(&hex(&chain.key)), "{shown}");
    for bad in ["AKID1 s1\nAKID1 s2\n", "AKID1\n", "AKID1 s1 extra\n", "# nothing\n"] {
        let e = Keys::parse(bad).unwrap_err();
        assert!(!e.contains("s1") && !e.contains("s2"), "{e}");
    }
    // a cached key is the derived one, for each (access key, date, region)
    let mut cache = KeyCache::default();
    let scope = Scope { date: "20130524".into(), region: "us-east-1".into() };
    let key = cache.key(AK, SK, &scope);
    assert_eq!(key, signing_key(SK, "20130524", "us-east-1", "s3"));
    assert_eq!(cache.key(AK, "ignored when cached", &scope), key);
    for d in 0..40 {
        cache.key(AK, SK, &Scope { date: format!("201305{d:02}"), region: "r".into() });
    }
    assert_eq!(cache.0.len(), CACHE_SIZE);
}

/// rclone's presigned PUTs send `Content-Length` twice, alike, having signed it once.
#[test]
fn a_content_length_sent_twice_alike_is_signed_once() {
    let signed = ["content-length", "host", "x-amz-content-sha256", "x-amz-date"];
    let one = [
        ("Host", "h"),
        ("Content-Length", "6"),
        ("x-amz-date", "20130524T000000Z"),
        ("x-amz-content-sha256", EMPTY_SHA256),
    ];
    let creq = canonical_request(
        "PUT",
        "/b/k",
        "",
        &canonical_headers(&Headers(&hdrs(&one)), &signed),
        &signed.join(";"),
        EMPTY_SHA256.as_bytes(),
    );
    let key = signing_key(SK, "20130524", "us-east-1", "s3");
    let sig =
        hex(&hmac(&key, string_to_sign("20130524T000000Z", "20130524/us-east-1/s3/aws4_request", &creq).as_bytes()));
    let a = authorization(&signed.join(";"), &sig);
    let mut h: Vec<(&str, &str)> = one.to_vec();
    h.push(("Authorization", &a));
    assert!(auth("PUT", "/b/k", &h, T2013).is_ok());
    h.push(("content-length", "6"));
    assert!(auth("PUT", "/b/k", &h, T2013).is_ok());
}

/// A presigned URL whose query signs the body's SHA-256 (`X-Amz-Content-Sha256`) takes that
/// body only: the hash was signed, then not checked, and any body was stored (a helper's).
#[test]
fn a_body_hash_signed_in_a_presigned_query_binds_the_body() {
    let intended: [u8; 32] = Sha256::digest(b"the intended body").into();
    let query = format!(
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Content-Sha256={}&X-Amz-Credential={AK}%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host",
        hex(&intended)
    );
    let h = [("Host", "mkv:3000")];
    let creq = canonical_request(
        "PUT",
        "/b/k",
        &canonical_query(query.as_bytes(), true).unwrap(),
        &canonical_headers(&Headers(&hdrs(&h)), &["host"]),
        "host",
        hex(&intended).as_bytes(),
    );
    let key = signing_key(SK, "20130524", "us-east-1", "s3");
    let sts = string_to_sign("20130524T000000Z", "20130524/us-east-1/s3/aws4_request", &creq);
    let target = format!("/b/k?{query}&X-Amz-Signature={}", hex(&hmac(&key, sts.as_bytes())));
    assert_eq!(auth("PUT", &target, &h, T2013).unwrap().content, ContentSha256::Sha256(intended));
    // a header naming another body is no way round it
    let other = hex(&Sha256::digest(b"another body"));
    let both = [h[0], ("x-amz-content-sha256", other.as_str())];
    assert!(auth("PUT", &target, &both, T2013).is_err());
}
