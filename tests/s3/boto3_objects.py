"""boto3 on objects: put/get/head/range, conditional reads, metadata, empty objects, folder
markers, copy, delete. `https` as the first argument: run as botocore does over https
(PutObject and UploadPart aws-chunked with a CRC32 trailer), checked on the wire."""

import contextlib
import datetime

import botocore

from common import ARGS, Wire, as_over_https, body, client, done, eq, error_of, md5

HTTPS = ARGS[:1] == ["https"]
B = "objects-https" if HTTPS else "objects"

with as_over_https() if HTTPS else contextlib.nullcontext():
    s3 = client()
    wire = Wire(s3)
    s3.create_bucket(Bucket=B)

    value = bytes(range(256)) * 4000  # 1,024,000 bytes
    r = s3.put_object(Bucket=B, Key="a/value.bin", Body=value, ContentType="application/x-test",
                      Metadata={"colour": "blue", "Two-Words": "x y"})
    eq(r["ETag"], f'"{md5(value)}"', "PutObject ETag")
    sent = wire.last("PUT")
    if HTTPS:
        # what botocore sends over TLS: the body aws-chunked, a CRC32 trailer
        eq(sent.get("Content-Encoding"), "aws-chunked", "Content-Encoding")
        eq(sent.get("Transfer-Encoding"), "chunked", "Transfer-Encoding")
        eq(sent.get("X-Amz-Trailer"), "x-amz-checksum-crc32", "X-Amz-Trailer")
        eq(sent.get("X-Amz-Decoded-Content-Length"), str(len(value)), "decoded length")
        eq(sent.get("X-Amz-Content-SHA256"), "STREAMING-UNSIGNED-PAYLOAD-TRAILER", "content sha256")
        assert "Content-Length" not in sent, sent
    else:
        # over http: a signed payload and a CRC32 header
        assert "x-amz-checksum-crc32" in {k.lower() for k in sent}, sent
        assert "Content-Encoding" not in sent, sent
    eq(r.get("ChecksumCRC32") is not None, True, "the CRC32 is answered back")

    eq(body(s3, B, "a/value.bin"), value, "GetObject bytes")
    h = s3.head_object(Bucket=B, Key="a/value.bin")
    eq(h["ContentLength"], len(value), "HEAD length")
    eq(h["ContentType"], "application/x-test", "HEAD content type")
    eq(h["Metadata"], {"colour": "blue", "two-words": "x y"}, "HEAD metadata")
    eq(h["ETag"], f'"{md5(value)}"', "HEAD ETag")
    assert "VersionId" not in h, h
    # whole seconds in listings, as S3 and Last-Modified: aws s3 sync --exact-timestamps
    # compares them with the mtime it set (in whole seconds) on a downloaded file
    for listing in (s3.list_objects_v2, s3.list_objects):
        listed = listing(Bucket=B, Prefix="a/value.bin")["Contents"]
        eq([o["LastModified"] for o in listed], [h["LastModified"]], f"{listing.__name__} LastModified is HEAD's")
    g = s3.get_object(Bucket=B, Key="a/value.bin")
    eq((g["ContentType"], g["Metadata"]), ("application/x-test", {"colour": "blue", "two-words": "x y"}), "GET headers")
    g["Body"].read()
    # S3's 2 KiB of user metadata: names (without x-amz-meta-) and values; standard headers aside
    at_limit = {"k": "v" * 2047}
    s3.put_object(Bucket=B, Key="a/meta.bin", Body=b"m", Metadata=at_limit, ContentType="application/octet-stream")
    eq(s3.head_object(Bucket=B, Key="a/meta.bin")["Metadata"], at_limit, "2 KiB of metadata kept")
    eq(error_of(s3.put_object, Bucket=B, Key="a/meta.bin", Body=b"n", Metadata={"k": "v" * 2048}),
       (400, "MetadataTooLarge"), "a byte past 2 KiB")
    eq(body(s3, B, "a/meta.bin"), b"m", "the refused write left the object")
    # standard headers are no user metadata, but more than the record keeps is refused, not cut
    eq(error_of(s3.put_object, Bucket=B, Key="a/meta.bin", Body=b"n", ContentDisposition="d" * 9000,
                Metadata={"colour": "blue"}), (400, "MetadataTooLarge"), "9,000 bytes of Content-Disposition")
    eq(s3.head_object(Bucket=B, Key="a/meta.bin")["Metadata"], at_limit, "the object's metadata as it was")

    # ranges: 206 with Content-Range
    r = s3.get_object(Bucket=B, Key="a/value.bin", Range="bytes=1000-1999")
    eq(r["ResponseMetadata"]["HTTPStatusCode"], 206, "range status")
    eq(r["ContentRange"], f"bytes 1000-1999/{len(value)}", "Content-Range")
    eq(r["Body"].read(), value[1000:2000], "range bytes")
    eq(body(s3, B, "a/value.bin", Range="bytes=-10"), value[-10:], "suffix range")
    # a range past 64 KiB goes socket to socket (spliced), whole objects too
    eq(body(s3, B, "a/value.bin", Range="bytes=100001-899999"), value[100001:900000], "long range")
    eq(body(s3, B, "a/value.bin"), value, "whole value")
    eq(body(s3, B, "a/value.bin", Range=f"bytes={len(value) - 5}-"), value[-5:], "open range")
    eq(error_of(s3.get_object, Bucket=B, Key="a/value.bin", Range=f"bytes={len(value)}-"),
       (416, "InvalidRange"), "range past the end")

    # conditional reads
    tag = f'"{md5(value)}"'
    eq(error_of(s3.get_object, Bucket=B, Key="a/value.bin", IfNoneMatch=tag), (304, "304"), "If-None-Match")
    eq(error_of(s3.head_object, Bucket=B, Key="a/value.bin", IfNoneMatch=tag), (304, "304"), "HEAD If-None-Match")
    eq(body(s3, B, "a/value.bin", IfNoneMatch='"0123"'), value, "If-None-Match other")
    eq(error_of(s3.get_object, Bucket=B, Key="a/value.bin", IfMatch='"0123"'), (412, "PreconditionFailed"), "If-Match")
    eq(body(s3, B, "a/value.bin", IfMatch=tag), value, "If-Match same")
    future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    eq(error_of(s3.get_object, Bucket=B, Key="a/value.bin", IfModifiedSince=future), (304, "304"), "If-Modified-Since")

    # an overwrite replaces value and headers; a small one (one write, no streaming)
    r = s3.put_object(Bucket=B, Key="a/value.bin", Body=b"small", ContentType="text/plain")
    eq(r["ETag"], f'"{md5(b"small")}"', "overwrite ETag")
    eq(body(s3, B, "a/value.bin"), b"small", "overwritten bytes")
    h = s3.head_object(Bucket=B, Key="a/value.bin")
    eq((h["ContentType"], h["Metadata"], h["ContentLength"]), ("text/plain", {}, 5), "overwritten headers")
    # a conditional write: If-None-Match: * on an existing key is refused
    eq(error_of(s3.put_object, Bucket=B, Key="a/value.bin", Body=b"no", IfNoneMatch="*"),
       (412, "PreconditionFailed"), "PUT If-None-Match *")
    eq(body(s3, B, "a/value.bin"), b"small", "after a refused conditional PUT")

    # empty objects and folder markers
    r = s3.put_object(Bucket=B, Key="empty", Body=b"")
    eq(r["ETag"], '"d41d8cd98f00b204e9800998ecf8427e"', "empty ETag")
    eq(body(s3, B, "empty"), b"", "empty bytes")
    eq(s3.head_object(Bucket=B, Key="empty")["ContentLength"], 0, "empty length")
    s3.put_object(Bucket=B, Key="dir/", Body=b"")
    eq(s3.head_object(Bucket=B, Key="dir/")["ContentLength"], 0, "folder marker length")
    listed = s3.list_objects_v2(Bucket=B, Prefix="dir/")
    eq([(o["Key"], o["Size"]) for o in listed["Contents"]], [("dir/", 0)], "folder marker listed")
    s3.put_object(Bucket=B, Key="dir/inside", Body=b"in")
    top = s3.list_objects_v2(Bucket=B, Delimiter="/")
    eq([p["Prefix"] for p in top["CommonPrefixes"]], ["a/", "dir/"], "common prefixes")
    eq([o["Key"] for o in top["Contents"]], ["empty"], "top-level keys")

    # copy: the bytes and (by default) the metadata; REPLACE takes the request's
    s3.put_object(Bucket=B, Key="src", Body=value, Metadata={"k": "v"}, ContentType="image/png")
    r = s3.copy_object(Bucket=B, Key="copy", CopySource={"Bucket": B, "Key": "src"})
    eq(r["CopyObjectResult"]["ETag"], f'"{md5(value)}"', "copy ETag")
    eq(body(s3, B, "copy"), value, "copied bytes")
    h = s3.head_object(Bucket=B, Key="copy")
    eq((h["ContentType"], h["Metadata"]), ("image/png", {"k": "v"}), "copied headers")
    s3.copy_object(Bucket=B, Key="copy", CopySource={"Bucket": B, "Key": "a/value.bin"},
                   MetadataDirective="REPLACE", Metadata={"new": "1"}, ContentType="text/x-new")
    h = s3.head_object(Bucket=B, Key="copy")
    eq((h["ContentType"], h["Metadata"], h["ContentLength"]), ("text/x-new", {"new": "1"}, 5), "copy over, REPLACE")
    s3.create_bucket(Bucket=B + "-other")
    s3.copy_object(Bucket=B + "-other", Key="x/y", CopySource=f"{B}/src")
    eq(body(s3, B + "-other", "x/y"), value, "copy across buckets")
    eq(error_of(s3.copy_object, Bucket=B, Key="c2", CopySource={"Bucket": B, "Key": "nothing"}),
       (404, "NoSuchKey"), "copy of a missing key")
    eq(error_of(s3.copy_object, Bucket=B, Key="c2", CopySource={"Bucket": "no-such-bucket", "Key": "k"}),
       (404, "NoSuchBucket"), "copy from a missing bucket")
    # onto itself: refused unless something changes; a storage class counts, as in S3
    eq(error_of(s3.copy_object, Bucket=B, Key="src", CopySource={"Bucket": B, "Key": "src"}),
       (400, "InvalidRequest"), "copy onto itself changing nothing")
    s3.copy_object(Bucket=B, Key="src", CopySource={"Bucket": B, "Key": "src"}, StorageClass="STANDARD")
    eq(body(s3, B, "src"), value, "copy onto itself with a storage class")

    # what would be a wrong success is refused, and the object stays as it was: a storage
    # class mkv does not keep, an append (taken as a PutObject it replaced the object with
    # its tail), a RenameObject (taken as a PutObject it emptied the destination)
    eq(error_of(s3.copy_object, Bucket=B, Key="src", CopySource={"Bucket": B, "Key": "src"},
                StorageClass="GLACIER"), (501, "NotImplemented"), "copy onto itself to GLACIER")
    eq(error_of(s3.put_object, Bucket=B, Key="src", Body=b"cold", StorageClass="DEEP_ARCHIVE"),
       (501, "NotImplemented"), "PutObject to DEEP_ARCHIVE")
    eq(error_of(s3.put_object, Bucket=B, Key="src", Body=b"tail", WriteOffsetBytes=len(value)),
       (501, "NotImplemented"), "an append")
    s3.put_object(Bucket=B, Key="renamed", Body=b"kept")
    eq(error_of(s3.rename_object, Bucket=B, Key="renamed", RenameSource=f"{B}/src"),
       (501, "NotImplemented"), "RenameObject")
    eq((body(s3, B, "src"), body(s3, B, "renamed")), (value, b"kept"), "what the refused writes named")
    eq(error_of(s3.create_bucket, Bucket=B + "-locked", ObjectLockEnabledForBucket=True),
       (501, "NotImplemented"), "a bucket with object lock")
    eq(error_of(s3.head_bucket, Bucket=B + "-locked"), (404, "404"), "the refused bucket is not made")

    # delete: 204, also for a key that is not there
    eq(s3.delete_object(Bucket=B, Key="copy")["ResponseMetadata"]["HTTPStatusCode"], 204, "DeleteObject")
    eq(s3.delete_object(Bucket=B, Key="copy")["ResponseMetadata"]["HTTPStatusCode"], 204, "DeleteObject again")
    eq(error_of(s3.get_object, Bucket=B, Key="copy"), (404, "NoSuchKey"), "GET after delete")
    eq(error_of(s3.head_object, Bucket=B, Key="copy"), (404, "404"), "HEAD after delete")
    eq(error_of(s3.get_object, Bucket="no-such-bucket", Key="k"), (404, "NoSuchBucket"), "GET in a missing bucket")
    eq(error_of(s3.head_object, Bucket="no-such-bucket", Key="k"), (404, "404"), "HEAD in a missing bucket")

    # anonymous, as `aws --no-sign-request` and boto3's UNSIGNED go: nothing S3.md names
    # marks a HEAD or a DELETE as S3's, but botocore's own amz-sdk-* headers do
    anon = client(signature_version=botocore.UNSIGNED)
    anon.put_object(Bucket=B, Key="anon", Body=b"x")
    eq(anon.head_object(Bucket=B, Key="anon")["ContentLength"], 1, "anonymous HEAD")
    eq(body(anon, B, "anon"), b"x", "anonymous GET")
    eq(anon.delete_object(Bucket=B, Key="anon")["ResponseMetadata"]["HTTPStatusCode"], 204, "anonymous DELETE")
    eq(anon.delete_object(Bucket=B, Key="anon")["ResponseMetadata"]["HTTPStatusCode"], 204, "anonymous DELETE again")
    eq(error_of(anon.head_object, Bucket=B, Key="anon"), (404, "404"), "anonymous HEAD after delete")

done()
