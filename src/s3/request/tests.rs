use super::*;

fn hdrs<'a>(list: &'a [(&'a str, &'a str)]) -> Vec<httparse::Header<'a>> {
    list.iter().map(|(n, v)| httparse::Header { name: n, value: v.as_bytes() }).collect()
}

fn s3(method: &str, target: &str, headers: &[(&str, &str)]) -> bool {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    is_s3(method, path.as_bytes(), query.as_bytes(), &Headers(&hdrs(headers)))
}

fn op(method: &str, target: &str, headers: &[(&str, &str)]) -> Result<Op, S3Error> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    parse(method, path.as_bytes(), query.as_bytes(), &Headers(&hdrs(headers)))
}

fn obj(bucket: &str, key: &[u8]) -> Object {
    Object { bucket: bucket.into(), key: key.to_vec() }
}

#[test]
fn native_requests_stay_native() {
    assert!(!s3("GET", "/k", &[]));
    assert!(!s3("GET", "/p?list", &[]));
    assert!(!s3("GET", "/p?list&start=/p/a&limit=3&encoding=url", &[]));
    assert!(!s3("GET", "/p?unlinked", &[]));
    assert!(!s3("PUT", "/k", &[("Content-Length", "5")]));
    assert!(!s3("PUT", "/dir/", &[("Content-Length", "5")]));
    assert!(!s3("PUT", "/dir/", &[("Transfer-Encoding", "chunked")]));
    assert!(!s3("PUT", "/", &[]));
    assert!(!s3("UNLINK", "/k", &[]));
    assert!(!s3("DELETE", "/k", &[("Authorization", "Bearer t")]));
    assert!(!s3("GET", "/", &[("Host", "x"), ("Content-Encoding", "gzip")]));
}

#[test]
fn s3_requests_are_recognized() {
    assert!(s3("GET", "/b/k", &[("Authorization", "AWS4-HMAC-SHA256 Credential=a/b/c/s3/aws4_request, …")]));
    assert!(s3("GET", "/b/k", &[("Authorization", "AWS AKID:sig")]));
    assert!(s3("GET", "/b/k", &[("X-Amz-Date", "20130524T000000Z")]));
    // an SDK's anonymous HEAD or DELETE (`aws --no-sign-request`) carries only these
    assert!(s3("HEAD", "/b/k", &[("amz-sdk-invocation-id", "5b1a…"), ("amz-sdk-request", "attempt=1")]));
    assert!(s3("DELETE", "/b/k", &[("Amz-Sdk-Request", "attempt=1")]));
    assert!(!s3("HEAD", "/b/k", &[("amz-sdk-", "")]));
    assert!(s3("GET", "/b/k", &[("x-amz-content-sha256", "UNSIGNED-PAYLOAD")]));
    assert!(s3("GET", "/b/k?X-Amz-Signature=ab", &[]));
    assert!(s3("GET", "/b/k?x-amz-credential=ab", &[]));
    for q in [
        "list-type=2",
        "uploads",
        "uploads=",
        "uploadId=x",
        "partNumber=1",
        "delete",
        "location",
        "versioning",
        "prefix=a",
        "delimiter=",
        "marker=m",
        "max-keys=5",
        "acl",
        "tagging",
        "policy",
        "lifecycle",
        "cors",
        "versionId=null",
    ] {
        assert!(s3("GET", &format!("/b?{q}"), &[]), "{q}");
    }
    assert!(s3("PUT", "/b/k", &[("Content-Encoding", "aws-chunked")]));
    assert!(s3("PUT", "/b/k", &[("Content-Encoding", "gzip, aws-chunked")]));
    assert!(s3("PUT", "/b/dir/", &[("Content-Length", "0")]));
    assert!(s3("PUT", "/b/dir/", &[]));
}

#[test]
fn buckets() {
    assert_eq!(op("GET", "/", &[]), Ok(Op::ListBuckets { prefix: String::new(), max: None, after: None }));
    assert_eq!(
        op("GET", "/?prefix=lo&max-buckets=2&continuation-token=log", &[]),
        Ok(Op::ListBuckets { prefix: "lo".into(), max: Some(2), after: Some("log".into()) })
    );
    assert!(matches!(op("GET", "/?max-buckets=0", &[]), Err(S3Error::InvalidArgument(_))));
    assert!(matches!(op("GET", "/?max-buckets=10001", &[]), Err(S3Error::InvalidArgument(_))));
    assert_eq!(op("HEAD", "/", &[]), Err(S3Error::MethodNotAllowed));
    assert_eq!(op("PUT", "/photos", &[]), Ok(Op::CreateBucket { bucket: "photos".into() }));
    assert_eq!(op("PUT", "/photos/", &[("x-amz-acl", "private")]), Ok(Op::CreateBucket { bucket: "photos".into() }));
    assert_eq!(op("HEAD", "/photos", &[]), Ok(Op::HeadBucket { bucket: "photos".into() }));
    assert_eq!(op("DELETE", "/photos", &[]), Ok(Op::DeleteBucket { bucket: "photos".into() }));
    assert_eq!(op("GET", "/photos?location", &[]), Ok(Op::GetBucketLocation { bucket: "photos".into() }));
    assert_eq!(op("GET", "/photos?versioning", &[]), Ok(Op::GetBucketVersioning { bucket: "photos".into() }));
    assert!(matches!(op("PUT", "/photos?versioning", &[]), Ok(Op::NotImplemented(_))));
    assert_eq!(op("POST", "/photos?delete", &[]), Ok(Op::DeleteObjects { bucket: "photos".into() }));
    assert!(matches!(op("POST", "/photos", &[]), Ok(Op::NotImplemented(_))));
    assert_eq!(op("PATCH", "/photos", &[]), Err(S3Error::MethodNotAllowed));
    // a sub-resource's DELETE is no DeleteBucket
    assert_eq!(op("DELETE", "/photos?versioning", &[]), Err(S3Error::MethodNotAllowed));
    assert!(matches!(
        op("PUT", "/photos", &[("x-amz-bucket-object-lock-enabled", "true")]),
        Ok(Op::NotImplemented("object lock"))
    ));
    for sub in ["acl", "policy", "lifecycle", "cors", "tagging", "versions", "website"] {
        assert_eq!(
            op("GET", &format!("/photos?{sub}"), &[]),
            Ok(Op::NotImplemented(UNSUPPORTED.iter().find(|s| **s == sub).unwrap()))
        );
        assert!(matches!(op("PUT", &format!("/photos?{sub}"), &[]), Ok(Op::NotImplemented(_))));
    }
    // a bucket is created under today's rules, and reached under the legacy ones (the native
    // keys' first segments: one namespace)
    for bad in ["/ab", "/Photos", "/a_b", "/-ab", "/ab-", "/a..b", "/192.168.1.1", "/xn--ab", "/ab-s3alias"] {
        assert_eq!(op("PUT", bad, &[]), Err(S3Error::InvalidBucketName), "{bad}");
        assert!(matches!(op("GET", bad, &[]), Ok(Op::ListObjectsV1 { .. })), "{bad}");
        assert!(matches!(op("GET", &format!("{bad}/k"), &[]), Ok(Op::GetObject { .. })), "{bad}/k");
    }
    let long = format!("/{}", "a".repeat(256));
    for bad in ["/a%2Fb/k", "/a%20b/k", "/./k", "/../k", "/%C3%A9t%C3%A9/k", &long] {
        assert_eq!(op("GET", bad, &[]), Err(S3Error::InvalidBucketName), "{bad}");
    }
    assert!(valid_bucket("my.bucket-1") && valid_bucket(&"a".repeat(63)) && !valid_bucket(&"a".repeat(64)));
    assert!(reachable_bucket("a") && reachable_bucket("My_Photos") && reachable_bucket(&"a".repeat(255)));
}

#[test]
fn listings() {
    let list = |prefix: &[u8], delimiter: Option<&[u8]>, max_keys, url_encoding| ListParams {
        prefix: prefix.to_vec(),
        delimiter: delimiter.map(<[u8]>::to_vec),
        max_keys,
        url_encoding,
    };
    // s3cmd: GET /b/?delimiter= (empty delimiter: none)
    assert_eq!(
        op("GET", "/b12/?delimiter=", &[]),
        Ok(Op::ListObjectsV1 { bucket: "b12".into(), list: list(b"", None, 1000, false), marker: vec![] })
    );
    assert_eq!(
        op("GET", "/b12?prefix=a%2Fb+c&delimiter=%2F&marker=a%2Fa&max-keys=5000&encoding-type=url", &[]),
        Ok(Op::ListObjectsV1 {
            bucket: "b12".into(),
            list: list(b"a/b c", Some(b"/"), 1000, true),
            marker: b"a/a".to_vec()
        })
    );
    let token = continuation_token(b"a/\xff key");
    assert_eq!(
        op(
            "GET",
            &format!("/b12?list-type=2&continuation-token={token}&start-after=z&max-keys=0&fetch-owner=true"),
            &[]
        ),
        Ok(Op::ListObjectsV2 {
            bucket: "b12".into(),
            list: list(b"", None, 0, false),
            continuation: Some(b"a/\xff key".to_vec()),
            start_after: b"z".to_vec(),
            fetch_owner: true,
        })
    );
    assert!(matches!(op("GET", "/b12?list-type=2&continuation-token=%21%21", &[]), Err(S3Error::InvalidArgument(_))));
    assert!(matches!(op("GET", "/b12?list-type=2&continuation-token=", &[]), Err(S3Error::InvalidArgument(_))));
    assert!(matches!(op("GET", "/b12?list-type=3", &[]), Err(S3Error::InvalidArgument(_))));
    assert!(matches!(op("GET", "/b12?max-keys=-1", &[]), Err(S3Error::InvalidArgument(_))));
    assert!(matches!(op("GET", "/b12?max-keys=ten", &[]), Err(S3Error::InvalidArgument(_))));
    assert!(matches!(op("GET", "/b12?encoding-type=base64", &[]), Err(S3Error::InvalidArgument(_))));
    assert_eq!(op("GET", "/b12?prefix=%zz", &[]), Err(S3Error::InvalidURI));
    // the MinIO SDK: ?uploads= and an empty delimiter
    assert_eq!(
        op("GET", "/b12?uploads=&delimiter=&prefix=p&key-marker=k&upload-id-marker=u1&max-uploads=7", &[]),
        Ok(Op::ListMultipartUploads {
            bucket: "b12".into(),
            list: list(b"p", None, 7, false),
            key_marker: b"k".to_vec(),
            upload_id_marker: "u1".into()
        })
    );
}

#[test]
fn objects() {
    let o = obj("b12", b"dir/a b+c");
    assert_eq!(o.native_key(), b"/b12/dir/a b+c");
    assert_eq!(
        op(
            "PUT",
            "/b12/dir/a%20b+c",
            &[("Content-Type", "text/plain"), ("x-amz-acl", "public-read"), ("Content-Length", "3")]
        ),
        Ok(Op::PutObject {
            obj: o.clone(),
            meta: Metadata { headers: vec![("content-type".into(), b"text/plain".to_vec())] },
            conditions: Conditions::default()
        })
    );
    // pyarrow's folder marker
    assert!(matches!(op("PUT", "/b12/dir/", &[]), Ok(Op::PutObject { obj, .. }) if obj.key == b"dir/"));
    assert_eq!(
        op("DELETE", "/b12/k", &[]),
        Ok(Op::DeleteObject { obj: obj("b12", b"k"), write_if: Conditions::default() })
    );
    let Ok(Op::GetObject { obj: got, read }) = op(
        "GET",
        "/b12/%00%ff?response-content-type=a%2Fb&response-expires=x%0D%0Ay",
        &[("Range", "bytes=0-9"), ("If-None-Match", "\"e\"")],
    ) else {
        panic!("not a GetObject")
    };
    assert_eq!(got, obj("b12", b"\x00\xff"));
    assert_eq!(read.range, Some(ByteRange::From { first: 0, last: Some(9) }));
    assert_eq!(read.conditions.if_none_match, Some(b"\"e\"".to_vec()));
    assert_eq!(read.overrides, vec![("Content-Type", b"a/b".to_vec())]);
    // rclone: HEAD ?versionId= after an upload; mkv's only version is "null"
    assert!(matches!(op("HEAD", "/b12/k?versionId=null", &[]), Ok(Op::HeadObject { .. })));
    assert_eq!(op("HEAD", "/b12/k?versionId=abc", &[]), Err(S3Error::NoSuchVersion));
    assert!(matches!(op("GET", "/b12/k?partNumber=1", &[]), Ok(Op::NotImplemented(_))));
    // a customer key to read with: nothing is stored encrypted, so it applies to nothing
    for m in ["GET", "HEAD"] {
        let sse_c = [("x-amz-server-side-encryption-customer-algorithm", "AES256")];
        assert!(matches!(op(m, "/b12/k", &sse_c), Err(S3Error::InvalidRequest(_))), "{m}");
    }
    assert!(matches!(op("GET", "/b12/k?acl", &[]), Ok(Op::NotImplemented("acl"))));
    assert!(matches!(op("PUT", "/b12/k?renameObject", &[]), Ok(Op::NotImplemented("renameObject"))));
    assert!(s3("PUT", "/b12/k?renameObject", &[]));
    assert!(matches!(op("PUT", "/b12/k", &[("x-amz-storage-class", "STANDARD")]), Ok(Op::PutObject { .. })));
    // a class S3 does not know is S3's own 400, not "not implemented"
    assert_eq!(op("PUT", "/b12/k", &[("x-amz-storage-class", "FOO")]), Err(S3Error::InvalidStorageClass));
    assert_eq!(op("POST", "/b12/k?uploads", &[("x-amz-storage-class", "FOO")]), Err(S3Error::InvalidStorageClass));
    assert_eq!(op("GET", &format!("/b12/{}", "k".repeat(1025)), &[]), Err(S3Error::KeyTooLong));
    assert_eq!(op("GET", "/b12/a%2", &[]), Err(S3Error::InvalidURI));
    for (name, value) in [
        ("x-amz-server-side-encryption", "AES256"),
        ("x-amz-server-side-encryption-customer-algorithm", "AES256"),
        ("x-amz-tagging", "a=b"),
        ("x-amz-object-lock-mode", "GOVERNANCE"),
        ("x-amz-grant-read", "id=x"),
        ("x-amz-write-offset-bytes", "6"),
        ("x-amz-rename-source", "b12/src"),
        ("x-amz-storage-class", "GLACIER"),
    ] {
        assert!(
            matches!(
                op("PUT", "/b12/k", &[(name, value)]),
                Ok(Op::NotImplemented(_)) | Err(S3Error::NotImplemented(_))
            ),
            "{name}"
        );
    }
}

#[test]
fn copies() {
    assert_eq!(
        op(
            "PUT",
            "/b12/dst",
            &[("x-amz-copy-source", "/src1/a%2Bb"), ("x-amz-copy-source-if-match", "\"e\""), ("If-None-Match", "*")]
        ),
        Ok(Op::CopyObject {
            obj: obj("b12", b"dst"),
            source: obj("src1", b"a+b"),
            meta: None,
            conditions: Conditions { if_match: Some(b"\"e\"".to_vec()), ..Default::default() },
            write_if: Conditions { if_none_match: Some(b"*".to_vec()), ..Default::default() }
        })
    );
    assert!(matches!(
        op("PUT", "/b12/dst", &[("x-amz-copy-source", "src1/k"), ("x-amz-metadata-directive", "REPLACE"), ("Content-Type", "a/b")]),
        Ok(Op::CopyObject { meta: Some(m), .. }) if m.content_type() == Some(&b"a/b"[..])
    ));
    assert!(matches!(op("PUT", "/b12/k", &[("x-amz-copy-source", "b12/k")]), Err(S3Error::InvalidRequest(_))));
    assert!(matches!(
        op("PUT", "/b12/k", &[("x-amz-copy-source", "b12/k"), ("x-amz-metadata-directive", "REPLACE")]),
        Ok(Op::CopyObject { .. })
    ));
    assert!(matches!(
        op("PUT", "/b12/k", &[("x-amz-copy-source", "b12/j"), ("x-amz-metadata-directive", "MOVE")]),
        Err(S3Error::InvalidArgument(_))
    ));
    assert_eq!(op("PUT", "/b12/k", &[("x-amz-copy-source", "b12/j?versionId=v2")]), Err(S3Error::NoSuchVersion));
}

#[test]
fn multipart() {
    let o = obj("b12", b"big");
    assert_eq!(
        op("POST", "/b12/big?uploads", &[("Content-Type", "a/b")]),
        Ok(Op::CreateMultipartUpload {
            obj: o.clone(),
            meta: Metadata { headers: vec![("content-type".into(), b"a/b".to_vec())] }
        })
    );
    assert_eq!(
        op("POST", "/b12/big?uploads=", &[]),
        Ok(Op::CreateMultipartUpload { obj: o.clone(), meta: Metadata::default() })
    );
    assert_eq!(
        op("PUT", "/b12/big?partNumber=3&uploadId=u-1", &[]),
        Ok(Op::UploadPart { obj: o.clone(), upload_id: "u-1".into(), part: 3 })
    );
    assert_eq!(
        op(
            "PUT",
            "/b12/big?partNumber=2&uploadId=u-1",
            &[("x-amz-copy-source", "src1/k"), ("x-amz-copy-source-range", "bytes=0-99")]
        ),
        Ok(Op::UploadPartCopy {
            obj: o.clone(),
            upload_id: "u-1".into(),
            part: 2,
            source: obj("src1", b"k"),
            range: Some((0, 99)),
            conditions: Conditions::default()
        })
    );
    assert!(matches!(
        op(
            "PUT",
            "/b12/big?partNumber=2&uploadId=u-1",
            &[("x-amz-copy-source", "src1/k"), ("x-amz-copy-source-range", "bytes=5-")]
        ),
        Err(S3Error::InvalidArgument(_))
    ));
    for bad in [
        "partNumber=0&uploadId=u",
        "partNumber=10001&uploadId=u",
        "partNumber=x&uploadId=u",
        "partNumber=1",
        "uploadId=u",
    ] {
        assert!(matches!(op("PUT", &format!("/b12/big?{bad}"), &[]), Err(S3Error::InvalidArgument(_))), "{bad}");
    }
    assert_eq!(op("PUT", "/b12/big?partNumber=1&uploadId=%2E%2E%2Fx", &[]), Err(S3Error::NoSuchUpload));
    assert_eq!(
        op("POST", "/b12/big?uploadId=u-1", &[]),
        Ok(Op::CompleteMultipartUpload { obj: o.clone(), upload_id: "u-1".into(), write_if: Conditions::default() })
    );
    assert_eq!(
        op("DELETE", "/b12/big?uploadId=u-1", &[]),
        Ok(Op::AbortMultipartUpload { obj: o.clone(), upload_id: "u-1".into() })
    );
    assert_eq!(
        op("GET", "/b12/big?uploadId=u-1&max-parts=2&part-number-marker=5", &[]),
        Ok(Op::ListParts { obj: o.clone(), upload_id: "u-1".into(), max_parts: 2, part_number_marker: 5 })
    );
    assert!(matches!(op("POST", "/b12/big", &[]), Ok(Op::NotImplemented(_))));
}

#[test]
fn a_checksum_algorithm_s3_does_not_know_is_refused() {
    for (method, target, header) in [
        ("POST", "/b12/big?uploads", "x-amz-checksum-algorithm"),
        ("PUT", "/b12/big", "x-amz-sdk-checksum-algorithm"),
        ("PUT", "/b12/big?partNumber=1&uploadId=u-1", "x-amz-sdk-checksum-algorithm"),
    ] {
        assert!(matches!(op(method, target, &[(header, "FOO")]), Err(S3Error::InvalidRequest(_))), "{target}");
        for known in ["CRC32", "crc32c", "CRC64NVME", "SHA1", "SHA256"] {
            assert!(op(method, target, &[(header, known)]).is_ok(), "{target} {known}");
        }
    }
}

/// A checksum value in a header mkv does not compute (S3's newer SHA512, MD5, XXHASH*) is
/// refused, not ignored: ignored, a wrong one stored the body (a wrong success).
#[test]
fn a_checksum_header_mkv_does_not_compute_is_refused() {
    let writes = [
        ("PUT", "/b12/big"),
        ("PUT", "/b12/big?partNumber=1&uploadId=u-1"),
        ("POST", "/b12/big?uploads"),
        ("POST", "/b12/big?uploadId=u-1"),
        ("POST", "/b12?delete"),
    ];
    for (method, target) in writes {
        for header in ["x-amz-checksum-sha512", "X-Amz-Checksum-Md5", "x-amz-checksum-xxhash64", "x-amz-checksum-foo"] {
            let r = op(method, target, &[(header, "AAAAAAAAAAA=")]);
            assert!(matches!(r, Err(S3Error::InvalidRequest(_))), "{method} {target} {header}: {r:?}");
        }
        // the checksums mkv checks, and the headers that carry no checksum value
        for header in
            ["x-amz-checksum-crc32", "x-amz-checksum-sha256", "x-amz-checksum-type", "x-amz-checksum-algorithm"]
        {
            let value = if header.ends_with("algorithm") { "CRC32" } else { "AAAAAA==" };
            assert!(op(method, target, &[(header, value)]).is_ok(), "{method} {target} {header}");
        }
    }
    assert!(op("GET", "/b12/big", &[("x-amz-checksum-mode", "ENABLED")]).is_ok());
}

#[test]
fn an_s3_write_names_a_utf8_key_and_reads_take_any() {
    let bad = |r: Result<Op, S3Error>| matches!(r, Err(S3Error::InvalidArgument(why)) if why.contains("UTF-8"));
    assert!(bad(op("PUT", "/bkt/a%FFb", &[])));
    assert!(bad(op("PUT", "/bkt/a%FFb", &[("x-amz-copy-source", "/bkt/src")])));
    assert!(bad(op("POST", "/bkt/a%C3?uploads", &[])));
    assert!(matches!(op("PUT", "/bkt/a%C3%A9b", &[]), Ok(Op::PutObject { .. })));
    // a key the native API made with such bytes is still read, copied from and deleted
    assert!(matches!(op("GET", "/bkt/a%FFb", &[]), Ok(Op::GetObject { .. })));
    assert!(matches!(op("HEAD", "/bkt/a%FFb", &[]), Ok(Op::HeadObject { .. })));
    assert!(matches!(op("DELETE", "/bkt/a%FFb", &[]), Ok(Op::DeleteObject { .. })));
    assert!(matches!(op("PUT", "/bkt/dst", &[("x-amz-copy-source", "/bkt/a%FFb")]), Ok(Op::CopyObject { .. })));
}
