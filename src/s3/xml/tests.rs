use super::*;

fn s(v: Vec<u8>) -> String {
    String::from_utf8(v).unwrap()
}

/// The document without its XML declaration and root namespace, to compare compactly.
fn body(v: Vec<u8>) -> String {
    let text = String::from_utf8_lossy(&v).into_owned();
    text.split_once('\n').unwrap().1.replace(&format!(" xmlns=\"{XMLNS}\""), "")
}

fn params(prefix: &[u8], delimiter: Option<&[u8]>, url: bool) -> ListParams {
    ListParams { prefix: prefix.to_vec(), delimiter: delimiter.map(<[u8]>::to_vec), max_keys: 2, url_encoding: url }
}

#[test]
fn listings() {
    let contents = [Entry {
        key: b"photos/a&b.jpg",
        last_modified_ms: 1255369830000,
        etag: "d41d8cd98f00b204e9800998ecf8427e",
        size: 0,
    }];
    let prefixes = [b"photos/2024/".to_vec()];
    let p = params(b"photos/", Some(b"/"), false);
    let v1 = list_objects_v1(&ListV1 {
        bucket: "b12",
        params: &p,
        marker: b"",
        contents: &contents,
        common_prefixes: &prefixes,
        is_truncated: true,
        next_marker: Some(b"photos/2024/"),
    });
    assert!(s(v1.clone()).starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"));
    assert_eq!(
        body(v1),
        "<ListBucketResult><Name>b12</Name><Prefix>photos/</Prefix><Delimiter>/</Delimiter><MaxKeys>2</MaxKeys>\
         <Marker></Marker><NextMarker>photos/2024/</NextMarker><IsTruncated>true</IsTruncated>\
         <Contents><Key>photos/a&amp;b.jpg</Key><LastModified>2009-10-12T17:50:30.000Z</LastModified>\
         <ETag>\"d41d8cd98f00b204e9800998ecf8427e\"</ETag><Size>0</Size>\
         <Owner><ID>mkv</ID><DisplayName>mkv</DisplayName></Owner><StorageClass>STANDARD</StorageClass></Contents>\
         <CommonPrefixes><Prefix>photos/2024/</Prefix></CommonPrefixes></ListBucketResult>"
    );
    let p = params(b"a b+", None, true);
    let contents = [Entry { key: b"a b+/\x01\xff", last_modified_ms: 0, etag: "e-2", size: 7 }];
    let v2 = list_objects_v2(&ListV2 {
        bucket: "b12",
        params: &p,
        continuation_token: Some("dG9r"),
        start_after: b"a b",
        contents: &contents,
        common_prefixes: &[],
        is_truncated: false,
        next_continuation_token: None,
        fetch_owner: false,
    });
    assert_eq!(
        body(v2),
        "<ListBucketResult><Name>b12</Name><Prefix>a%20b%2B</Prefix><MaxKeys>2</MaxKeys><EncodingType>url</EncodingType>\
         <KeyCount>1</KeyCount><ContinuationToken>dG9r</ContinuationToken><StartAfter>a%20b</StartAfter>\
         <IsTruncated>false</IsTruncated><Contents><Key>a%20b%2B/%01%FF</Key>\
         <LastModified>1970-01-01T00:00:00.000Z</LastModified><ETag>\"e-2\"</ETag><Size>7</Size>\
         <StorageClass>STANDARD</StorageClass></Contents></ListBucketResult>"
    );
}

/// What a listing without `encoding-type=url` does with keys XML 1.0 cannot hold (see
/// the module doc): S3's character references for controls and CR, raw non-UTF-8 bytes.
#[test]
fn keys_xml_cannot_hold() {
    let mut out = Vec::new();
    escape(&mut out, b"tab\tnl\ncr\rsoh\x01nul\x00<&>\"'");
    assert_eq!(s(out), "tab\tnl\ncr&#xD;soh&#x1;nul&#x0;&lt;&amp;&gt;\"'");
    let mut out = Vec::new();
    escape(&mut out, "é\u{FFFF}".as_bytes());
    assert_eq!(s(out), "é&#xFFFF;");
    let mut out = Vec::new();
    escape(&mut out, b"a\xffb\xc3");
    assert_eq!(out, b"a\xffb\xc3", "bytes that are not UTF-8 go out as they are, never replaced");
    // a CR and a control character survive a round trip through a (lenient) parser
    let doc = delete_result(false, &[Deleted::Ok(b"a\rb\x01c")]);
    let back = tree(&doc, 10).unwrap();
    assert_eq!(back.child("Deleted").unwrap().child("Key").unwrap().text, b"a\rb\x01c");
    assert_eq!(url_encode(b"a\rb\x01c \xff+~/"), "a%0Db%01c%20%FF%2B~/");
}

#[test]
fn multipart_answers() {
    assert_eq!(
        body(initiate_multipart_upload("b12", b"big<1>", "u-1")),
        "<InitiateMultipartUploadResult><Bucket>b12</Bucket><Key>big&lt;1&gt;</Key><UploadId>u-1</UploadId></InitiateMultipartUploadResult>"
    );
    assert_eq!(
        body(complete_multipart_upload("http://h:3000/b12/big", "b12", b"big", "abc-2")),
        "<CompleteMultipartUploadResult><Location>http://h:3000/b12/big</Location><Bucket>b12</Bucket><Key>big</Key>\
         <ETag>\"abc-2\"</ETag></CompleteMultipartUploadResult>"
    );
    let parts = [Part { number: 3, last_modified_ms: 1000, etag: "p3", size: 5242880 }];
    let lp = body(list_parts(&ListPartsPage {
        bucket: "b12",
        key: b"big",
        upload_id: "u-1",
        part_number_marker: 2,
        next_part_number_marker: Some(3),
        max_parts: 1,
        is_truncated: true,
        parts: &parts,
    }));
    assert!(lp.contains("<PartNumberMarker>2</PartNumberMarker><NextPartNumberMarker>3</NextPartNumberMarker><MaxParts>1</MaxParts><IsTruncated>true</IsTruncated>"), "{lp}");
    assert!(lp.contains("<Part><PartNumber>3</PartNumber><LastModified>1970-01-01T00:00:01.000Z</LastModified><ETag>\"p3\"</ETag><Size>5242880</Size></Part>"), "{lp}");
    let p = params(b"", Some(b"/"), true);
    let uploads = [Upload { key: b"a b", upload_id: "u-1", initiated_ms: 0 }];
    let lu = body(list_multipart_uploads(&ListUploadsPage {
        bucket: "b12",
        params: &p,
        key_marker: b"",
        upload_id_marker: "",
        next_key_marker: Some(b"a b"),
        next_upload_id_marker: Some("u-1"),
        is_truncated: false,
        uploads: &uploads,
        common_prefixes: &[b"d/".to_vec()],
    }));
    assert!(lu.starts_with("<ListMultipartUploadsResult><Bucket>b12</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker><NextKeyMarker>a%20b</NextKeyMarker><NextUploadIdMarker>u-1</NextUploadIdMarker>"), "{lu}");
    assert!(lu.contains("<Upload><Key>a%20b</Key><UploadId>u-1</UploadId>"), "{lu}");
    assert!(lu.contains("<MaxUploads>2</MaxUploads><EncodingType>url</EncodingType>"), "{lu}");
    assert!(lu.ends_with("<CommonPrefixes><Prefix>d/</Prefix></CommonPrefixes></ListMultipartUploadsResult>"), "{lu}");
}

#[test]
fn other_answers() {
    let e = S3Error::NoSuchKey;
    let outcomes = [Deleted::Ok(b"a"), Deleted::Failed(b"b", &e)];
    assert_eq!(
        body(delete_result(false, &outcomes)),
        "<DeleteResult><Deleted><Key>a</Key></Deleted><Error><Key>b</Key><Code>NoSuchKey</Code>\
         <Message>The specified key does not exist.</Message></Error></DeleteResult>"
    );
    assert!(!body(delete_result(true, &outcomes)).contains("<Deleted>"));
    assert_eq!(
        body(copy_object_result("abc", 0)),
        "<CopyObjectResult><LastModified>1970-01-01T00:00:00.000Z</LastModified><ETag>\"abc\"</ETag></CopyObjectResult>"
    );
    assert!(body(copy_part_result("abc", 0)).starts_with("<CopyPartResult>"));
    assert_eq!(body(location_constraint("us-east-1")), "<LocationConstraint></LocationConstraint>");
    assert_eq!(body(location_constraint("eu-west-1")), "<LocationConstraint>eu-west-1</LocationConstraint>");
    assert_eq!(body(versioning_configuration()), "<VersioningConfiguration></VersioningConfiguration>");
    let buckets = [Bucket { name: "b12", created_ms: 0 }];
    assert!(body(list_buckets(&buckets, None, None)).contains(
        "<Buckets><Bucket><Name>b12</Name><CreationDate>1970-01-01T00:00:00.000Z</CreationDate></Bucket></Buckets>"
    ));
    assert_eq!(
        s(error(&S3Error::NoSuchBucket, b"/b12/k&", "r1")),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchBucket</Code>\
         <Message>The specified bucket does not exist.</Message><Resource>/b12/k&amp;</Resource>\
         <RequestId>r1</RequestId></Error>"
    );
}

#[test]
fn complete_bodies() {
    let doc = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CompleteMultipartUpload xmlns=\"{XMLNS}\">\n  \
         <Part>\n    <PartNumber> 1 </PartNumber>\n    <ETag>&quot;a1&quot;</ETag>\n    <ChecksumCRC32>AAAAAA==</ChecksumCRC32>\n  </Part>\n  \
         <s3:Part xmlns:s3=\"{XMLNS}\"><s3:ETag>\"b2\"</s3:ETag><s3:PartNumber>2</s3:PartNumber></s3:Part>\n\
         </CompleteMultipartUpload>"
    );
    let crc = Digest::from_base64(Algorithm::Crc32, b"AAAAAA==").unwrap();
    assert_eq!(
        parse_complete(doc.as_bytes()),
        Ok(vec![
            Listed { number: 1, etag: "a1".into(), checksum: Some(crc) },
            Listed { number: 2, etag: "b2".into(), checksum: None }
        ])
    );
    assert_eq!(
        parse_complete(
            b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>x</ETag></Part></CompleteMultipartUpload>"
        ),
        Ok(vec![Listed { number: 1, etag: "x".into(), checksum: None }])
    );
    let sha = b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>x</ETag><ChecksumSHA256>AAAAAA==</ChecksumSHA256></Part></CompleteMultipartUpload>";
    assert!(matches!(parse_complete(sha), Err(S3Error::InvalidRequest(_))), "not a SHA-256's base64");
    let order = b"<CompleteMultipartUpload><Part><PartNumber>2</PartNumber><ETag>x</ETag></Part><Part><PartNumber>1</PartNumber><ETag>y</ETag></Part></CompleteMultipartUpload>";
    assert_eq!(parse_complete(order), Err(S3Error::InvalidPartOrder));
    let twice = b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>x</ETag></Part><Part><PartNumber>1</PartNumber><ETag>y</ETag></Part></CompleteMultipartUpload>";
    assert_eq!(parse_complete(twice), Err(S3Error::InvalidPartOrder));
    for bad in [
        &b""[..],
        b"<CompleteMultipartUpload></CompleteMultipartUpload>",
        b"<CompleteMultipartUpload><Part><ETag>x</ETag></Part></CompleteMultipartUpload>",
        b"<CompleteMultipartUpload><Part><PartNumber>one</PartNumber><ETag>x</ETag></Part></CompleteMultipartUpload>",
        b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>x</ETag></Part>",
        b"<CompleteMultipartUpload><Part></CompleteMultipartUpload></Part>",
        b"<Complete><Part><PartNumber>1</PartNumber><ETag>x</ETag></Part></Complete>",
        b"<CompleteMultipartUpload/><CompleteMultipartUpload/>",
        b"garbage",
    ] {
        assert_eq!(parse_complete(bad), Err(S3Error::MalformedXML), "{:?}", String::from_utf8_lossy(bad));
    }
    let zero =
        b"<CompleteMultipartUpload><Part><PartNumber>0</PartNumber><ETag>x</ETag></Part></CompleteMultipartUpload>";
    assert!(matches!(parse_complete(zero), Err(S3Error::InvalidArgument(_))));
    let deep = format!("<CompleteMultipartUpload>{}{}</CompleteMultipartUpload>", "<a>".repeat(20), "</a>".repeat(20));
    assert_eq!(parse_complete(deep.as_bytes()), Err(S3Error::MalformedXML));
    assert_eq!(parse_complete(&vec![b' '; MAX_XML_BODY + 1]), Err(S3Error::EntityTooLarge));
}

#[test]
fn delete_bodies() {
    let doc = format!(
        "<Delete xmlns=\"{XMLNS}\"><Quiet>true</Quiet><Object><Key> spaced </Key></Object>\
         <Object><Key>a&amp;&#x1;&#13;<![CDATA[<c>]]></Key><VersionId>null</VersionId><ETag>\"e\"</ETag></Object></Delete>"
    );
    assert_eq!(
        parse_delete(doc.as_bytes()),
        Ok(DeleteRequest {
            quiet: true,
            objects: vec![
                ToDelete { key: b" spaced ".to_vec(), version: None, etag: None },
                ToDelete { key: b"a&\x01\r<c>".to_vec(), version: Some("null".into()), etag: Some(b"\"e\"".to_vec()) }
            ]
        })
    );
    assert_eq!(parse_delete(b"<Delete><Object><Key>k</Key></Object></Delete>").map(|d| d.quiet), Ok(false));
    let xxe = b"<?xml version=\"1.0\"?><!DOCTYPE d [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><Delete><Object><Key>&x;</Key></Object></Delete>";
    assert_eq!(parse_delete(xxe), Err(S3Error::MalformedXML));
    let unknown_entity = b"<Delete><Object><Key>&x;</Key></Object></Delete>";
    assert_eq!(parse_delete(unknown_entity), Err(S3Error::MalformedXML));
    for bad in [
        &b"<Delete></Delete>"[..],
        b"<Delete><Quiet>yes</Quiet><Object><Key>k</Key></Object></Delete>",
        b"<Delete><Object></Object></Delete>",
        b"<Delete><Object><Key>a</Key><Key>b</Key></Object></Delete>",
        b"<Remove/>",
    ] {
        assert_eq!(parse_delete(bad), Err(S3Error::MalformedXML), "{:?}", String::from_utf8_lossy(bad));
    }
    let many: String = (0..=MAX_LIST).map(|i| format!("<Object><Key>k{i}</Key></Object>")).collect();
    assert_eq!(parse_delete(format!("<Delete>{many}</Delete>").as_bytes()), Err(S3Error::MalformedXML));
    let most: String = (0..MAX_LIST).map(|i| format!("<Object><Key>k{i}</Key></Object>")).collect();
    assert_eq!(parse_delete(format!("<Delete>{most}</Delete>").as_bytes()).map(|d| d.objects.len()), Ok(MAX_LIST));
}
