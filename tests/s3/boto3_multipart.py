"""boto3 multipart: create, upload parts (one of them twice), list parts, list uploads,
abort, complete with S3's ETag, content type and metadata given at create kept; errors of
Complete. `https`: the parts go out aws-chunked with CRC32 trailers. Prints the ids of the
uploads it aborted and completed (the test then looks for their part files on the volumes)."""

import base64
import contextlib
import zlib

from common import ARGS, ENDPOINT, Wire, as_over_https, body, client, done, eq, error_of, md5, multipart_etag

HTTPS = ARGS[:1] == ["https"]
B = "multipart"
MiB = 1 << 20

with as_over_https() if HTTPS else contextlib.nullcontext():
    s3 = client()
    wire = Wire(s3)
    s3.create_bucket(Bucket=B)

    # a checksum S3 has no such name for: refused, not taken as none
    eq(error_of(s3.create_multipart_upload, Bucket=B, Key="k", ChecksumAlgorithm="FOO"),
       (400, "InvalidRequest"), "ChecksumAlgorithm FOO")

    # an upload that is aborted
    gone = s3.create_multipart_upload(Bucket=B, Key="aborted")["UploadId"]
    s3.upload_part(Bucket=B, Key="aborted", UploadId=gone, PartNumber=1, Body=b"p" * (5 * MiB))
    s3.upload_part(Bucket=B, Key="aborted", UploadId=gone, PartNumber=2, Body=b"tail")

    # the one completed: three parts, part 2 sent twice (the second one counts)
    r = s3.create_multipart_upload(Bucket=B, Key="dir/big.bin", ContentType="application/x-big",
                                   Metadata={"origin": "multipart"})
    eq((r["Bucket"], r["Key"]), (B, "dir/big.bin"), "InitiateMultipartUploadResult")
    uid = r["UploadId"]
    parts = [bytes([65 + i]) * (5 * MiB + i) for i in range(2)] + [b"last part"]
    etags = {}
    for n, data in enumerate(parts, 1):
        if n == 2:
            s3.upload_part(Bucket=B, Key="dir/big.bin", UploadId=uid, PartNumber=2, Body=b"replaced" * MiB)
        r = s3.upload_part(Bucket=B, Key="dir/big.bin", UploadId=uid, PartNumber=n, Body=data)
        eq(r["ETag"], f'"{md5(data)}"', f"part {n} ETag")
        etags[n] = r["ETag"]
    sent = wire.last("PUT")
    if HTTPS:
        eq((sent.get("Content-Encoding"), sent.get("X-Amz-Trailer")), ("aws-chunked", "x-amz-checksum-crc32"),
           "UploadPart as over https")

    lp = s3.list_parts(Bucket=B, Key="dir/big.bin", UploadId=uid)
    eq([(p["PartNumber"], p["ETag"], p["Size"]) for p in lp["Parts"]],
       [(n, etags[n], len(d)) for n, d in enumerate(parts, 1)], "ListParts")
    eq(lp["IsTruncated"], False, "ListParts truncated")
    lp = s3.list_parts(Bucket=B, Key="dir/big.bin", UploadId=uid, MaxParts=2)
    eq(([p["PartNumber"] for p in lp["Parts"]], lp["IsTruncated"], lp["NextPartNumberMarker"]), ([1, 2], True, 2),
       "ListParts page 1")
    lp = s3.list_parts(Bucket=B, Key="dir/big.bin", UploadId=uid, PartNumberMarker=2)
    eq([p["PartNumber"] for p in lp["Parts"]], [3], "ListParts page 2")

    # a bucket never created that holds only an upload in progress exists for the listing
    only = s3.create_multipart_upload(Bucket="uploads-only", Key="k")["UploadId"]
    eq([(u["Key"], u["UploadId"]) for u in s3.list_multipart_uploads(Bucket="uploads-only")["Uploads"]],
       [("k", only)], "ListMultipartUploads of a bucket holding only an upload")
    s3.abort_multipart_upload(Bucket="uploads-only", Key="k", UploadId=only)
    eq(error_of(s3.list_multipart_uploads, Bucket="uploads-only"), (404, "NoSuchBucket"),
       "ListMultipartUploads once its only upload is aborted")

    lu = s3.list_multipart_uploads(Bucket=B)
    eq(sorted((u["Key"], u["UploadId"]) for u in lu["Uploads"]), sorted([("aborted", gone), ("dir/big.bin", uid)]),
       "ListMultipartUploads")
    eq([u["Key"] for u in s3.list_multipart_uploads(Bucket=B, Prefix="dir/")["Uploads"]], ["dir/big.bin"],
       "ListMultipartUploads prefix")
    # a delimiter groups keys into common prefixes, as in object listings
    lu = s3.list_multipart_uploads(Bucket=B, Delimiter="/")
    eq(([u["Key"] for u in lu.get("Uploads", [])], [p["Prefix"] for p in lu.get("CommonPrefixes", [])]),
       (["aborted"], ["dir/"]), "ListMultipartUploads delimiter")
    # pages of one: the key and upload id markers resume after each upload
    extra = s3.create_multipart_upload(Bucket=B, Key="aborted")["UploadId"]
    seen, marker, id_marker = [], "", ""
    while True:
        lu = s3.list_multipart_uploads(Bucket=B, MaxUploads=1, KeyMarker=marker, UploadIdMarker=id_marker)
        seen += [(u["Key"], u["UploadId"]) for u in lu.get("Uploads", [])]
        if not lu["IsTruncated"]:
            break
        marker, id_marker = lu["NextKeyMarker"], lu["NextUploadIdMarker"]
    eq(seen, sorted([("aborted", gone), ("aborted", extra), ("dir/big.bin", uid)]), "ListMultipartUploads in pages of 1")
    eq([u["Key"] for u in s3.list_multipart_uploads(Bucket=B, KeyMarker="aborted").get("Uploads", [])], ["dir/big.bin"],
       "a key-marker alone skips every upload of that key")
    s3.abort_multipart_upload(Bucket=B, Key="aborted", UploadId=extra)

    # parts are in no listing, and the key is not there before Complete
    eq(s3.list_objects_v2(Bucket=B)["KeyCount"], 0, "parts are not listed")
    eq(error_of(s3.head_object, Bucket=B, Key="dir/big.bin"), (404, "404"), "HEAD before Complete")

    s3.abort_multipart_upload(Bucket=B, Key="aborted", UploadId=gone)
    eq(error_of(s3.list_parts, Bucket=B, Key="aborted", UploadId=gone), (404, "NoSuchUpload"), "parts of an aborted upload")
    eq(error_of(s3.upload_part, Bucket=B, Key="aborted", UploadId=gone, PartNumber=1, Body=b"x"),
       (404, "NoSuchUpload"), "a part for an aborted upload")

    # Complete's refusals: a wrong ETag, a part missing, parts out of order, a small part
    def complete(listed, key="dir/big.bin"):
        return s3.complete_multipart_upload(Bucket=B, Key=key, UploadId=uid, MultipartUpload={"Parts": listed})
    eq(error_of(complete, [{"PartNumber": 1, "ETag": '"00000000000000000000000000000000"'}]), (400, "InvalidPart"),
       "wrong ETag")
    eq(error_of(complete, [{"PartNumber": 4, "ETag": etags[1]}]), (400, "InvalidPart"), "missing part")
    eq(error_of(complete, [{"PartNumber": 2, "ETag": etags[2]}, {"PartNumber": 1, "ETag": etags[1]}]),
       (400, "InvalidPartOrder"), "order")
    eq(error_of(complete, [{"PartNumber": 3, "ETag": etags[3]}, {"PartNumber": 1, "ETag": etags[1]}]),
       (400, "InvalidPartOrder"), "order 3,1")
    # the upload is still there after refusals
    eq(len(s3.list_parts(Bucket=B, Key="dir/big.bin", UploadId=uid)["Parts"]), 3, "parts after refusals")

    r = complete([{"PartNumber": n, "ETag": etags[n]} for n in (1, 2, 3)])
    eq(r["ETag"], multipart_etag(parts), "CompleteMultipartUpload ETag")
    eq((r["Bucket"], r["Key"]), (B, "dir/big.bin"), "CompleteMultipartUploadResult")
    eq(r["Location"], f"{ENDPOINT}/{B}/dir/big.bin", "Location: the object's URL, whole")
    whole = b"".join(parts)
    eq(body(s3, B, "dir/big.bin"), whole, "the completed object")
    h = s3.head_object(Bucket=B, Key="dir/big.bin")
    eq((h["ContentLength"], h["ETag"], h["ContentType"], h["Metadata"]),
       (len(whole), multipart_etag(parts), "application/x-big", {"origin": "multipart"}), "HEAD of the completed object")
    eq(body(s3, B, "dir/big.bin", Range=f"bytes={5 * MiB - 2}-{5 * MiB + 1}"), whole[5 * MiB - 2:5 * MiB + 2],
       "a range across two parts")
    listed = s3.list_objects_v2(Bucket=B)["Contents"]
    eq([(o["Key"], o["Size"], o["ETag"]) for o in listed], [("dir/big.bin", len(whole), multipart_etag(parts))],
       "listed after Complete")
    eq(s3.list_multipart_uploads(Bucket=B).get("Uploads", []), [], "no uploads left")
    eq(error_of(s3.list_parts, Bucket=B, Key="dir/big.bin", UploadId=uid), (404, "NoSuchUpload"), "completed upload")

    # a part too small but the last
    small = s3.create_multipart_upload(Bucket=B, Key="small")["UploadId"]
    t1 = s3.upload_part(Bucket=B, Key="small", UploadId=small, PartNumber=1, Body=b"tiny")["ETag"]
    t2 = s3.upload_part(Bucket=B, Key="small", UploadId=small, PartNumber=2, Body=b"tiny")["ETag"]
    eq(error_of(s3.complete_multipart_upload, Bucket=B, Key="small", UploadId=small,
                MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": t1}, {"PartNumber": 2, "ETag": t2}]}),
       (400, "EntityTooSmall"), "a small part")
    r = s3.complete_multipart_upload(Bucket=B, Key="small", UploadId=small,
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": t1}]})
    eq(body(s3, B, "small"), b"tiny", "one small part alone")

    # a multipart upload over an existing key replaces it
    over = s3.create_multipart_upload(Bucket=B, Key="small")["UploadId"]
    t = s3.upload_part(Bucket=B, Key="small", UploadId=over, PartNumber=1, Body=b"new value")["ETag"]
    s3.complete_multipart_upload(Bucket=B, Key="small", UploadId=over,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": t}]})
    eq(body(s3, B, "small"), b"new value", "completed over an existing key")

    # UploadPartCopy: a range of an object as a part
    cp = s3.create_multipart_upload(Bucket=B, Key="copied")["UploadId"]
    r = s3.upload_part_copy(Bucket=B, Key="copied", UploadId=cp, PartNumber=1,
                            CopySource={"Bucket": B, "Key": "dir/big.bin"}, CopySourceRange=f"bytes=0-{5 * MiB - 1}")
    c1 = r["CopyPartResult"]["ETag"]
    eq(c1, f'"{md5(whole[:5 * MiB])}"', "UploadPartCopy ETag")
    c2 = s3.upload_part_copy(Bucket=B, Key="copied", UploadId=cp, PartNumber=2,
                             CopySource={"Bucket": B, "Key": "small"})["CopyPartResult"]["ETag"]
    size = len(b"new value")
    eq(error_of(s3.upload_part_copy, Bucket=B, Key="copied", UploadId=cp, PartNumber=3,
                CopySource={"Bucket": B, "Key": "small"}, CopySourceRange=f"bytes=0-{size}"),
       (400, "InvalidArgument"), "a copy range past the source's end")
    eq(error_of(s3.upload_part_copy, Bucket=B, Key="copied", UploadId=cp, PartNumber=3,
                CopySource={"Bucket": "no-such-bucket", "Key": "small"}),
       (404, "NoSuchBucket"), "a copy source in a missing bucket")
    s3.complete_multipart_upload(Bucket=B, Key="copied", UploadId=cp,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": c1}, {"PartNumber": 2, "ETag": c2}]})
    eq(body(s3, B, "copied"), whole[:5 * MiB] + b"new value", "an object of copied parts")

    # checksums a Complete sends are checked before anything is stored: the whole object's
    # (FULL_OBJECT: of every byte) and each part's; a refused Complete keeps the upload
    def crc32(data):
        return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    ck = s3.create_multipart_upload(Bucket=B, Key="checked", ChecksumAlgorithm="CRC32",
                                    ChecksumType="FULL_OBJECT")["UploadId"]
    c_parts = [b"c" * (5 * MiB), b"checked tail"]
    c_tags = [s3.upload_part(Bucket=B, Key="checked", UploadId=ck, PartNumber=n, Body=d, ChecksumAlgorithm="CRC32")["ETag"]
              for n, d in enumerate(c_parts, 1)]

    def complete_checked(sums, **whole):
        listed = [dict({"PartNumber": n, "ETag": t}, **({"ChecksumCRC32": c} if c else {}))
                  for n, (t, c) in enumerate(zip(c_tags, sums), 1)]
        return s3.complete_multipart_upload(Bucket=B, Key="checked", UploadId=ck, MultipartUpload={"Parts": listed},
                                            **whole)
    right = [crc32(d) for d in c_parts]
    eq(error_of(complete_checked, [None, None], ChecksumCRC32="AAAAAA==", ChecksumType="FULL_OBJECT"),
       (400, "BadDigest"), "a wrong whole-object CRC32")
    eq(error_of(complete_checked, [right[1], right[1]]), (400, "InvalidPart"), "a part's wrong CRC32")
    eq(error_of(s3.head_object, Bucket=B, Key="checked"), (404, "404"), "nothing stored after wrong checksums")
    complete_checked(right, ChecksumCRC32=crc32(b"".join(c_parts)), ChecksumType="FULL_OBJECT")
    eq(body(s3, B, "checked"), b"".join(c_parts), "completed with the right checksums")

    # DeleteBucket takes the uploads in progress into it along, as S3 does: none is listed
    # after, and none leaves a part file (the test looks)
    s3.create_bucket(Bucket="mp-doomed")
    doomed = s3.create_multipart_upload(Bucket="mp-doomed", Key="k")["UploadId"]
    s3.upload_part(Bucket="mp-doomed", Key="k", UploadId=doomed, PartNumber=1, Body=b"d" * MiB)
    eq(s3.delete_bucket(Bucket="mp-doomed")["ResponseMetadata"]["HTTPStatusCode"], 204,
       "DeleteBucket with an upload in progress")
    eq(error_of(s3.list_multipart_uploads, Bucket="mp-doomed"), (404, "NoSuchBucket"), "uploads of a deleted bucket")
    eq(error_of(s3.list_parts, Bucket="mp-doomed", Key="k", UploadId=doomed), (404, "NoSuchUpload"),
       "parts of an upload whose bucket was deleted")

    # the object size the client says it sent (MpuObjectSize): checked, not ignored
    sized = s3.create_multipart_upload(Bucket=B, Key="sized")["UploadId"]
    tag = s3.upload_part(Bucket=B, Key="sized", UploadId=sized, PartNumber=1, Body=b"hello")["ETag"]
    listed = {"Parts": [{"PartNumber": 1, "ETag": tag}]}
    eq(error_of(s3.complete_multipart_upload, Bucket=B, Key="sized", UploadId=sized, MultipartUpload=listed,
                MpuObjectSize=999), (400, "InvalidRequest"), "Complete with a wrong MpuObjectSize")
    s3.complete_multipart_upload(Bucket=B, Key="sized", UploadId=sized, MultipartUpload=listed, MpuObjectSize=5)
    eq(body(s3, B, "sized"), b"hello", "Complete with the right MpuObjectSize")
    s3.delete_object(Bucket=B, Key="sized")

print("UPLOADS", gone, uid, small, over, cp, ck)
done()
