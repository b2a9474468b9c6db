"""-s3-keys with Signature Version 2, as botocore makes it: the presigned URLs of its
default `generate_presigned_url` (`?AWSAccessKeyId=&Expires=&Signature=`), and requests
signed `Authorization: AWS access:signature` (Config(signature_version='s3'))."""

import time
from unittest import mock

from common import ENDPOINT, body, client, done, eq, error_of, fetch

B = "sigv2"
s3 = client()
s3.create_bucket(Bucket=B)
s3.put_object(Bucket=B, Key="a b+c/é", Body=b"signed with v2", ContentType="text/x-v2")

# presigned, botocore's default for this endpoint
url = s3.generate_presigned_url("get_object", Params={"Bucket": B, "Key": "a b+c/é"}, ExpiresIn=300)
assert "AWSAccessKeyId=" in url and "X-Amz-Signature" not in url, url
eq(fetch(url)[:2], (200, b"signed with v2"), "a SigV2 presigned GET")
url = s3.generate_presigned_url("get_object", Params={"Bucket": B, "Key": "a b+c/é", "ResponseContentType": "a/b c"},
                                ExpiresIn=300)
eq(fetch(url)[:2], (200, b"signed with v2"), "a SigV2 presigned GET with a response-content-type")
put = s3.generate_presigned_url("put_object", Params={"Bucket": B, "Key": "put by v2"}, ExpiresIn=300)
eq(fetch(put, "PUT", b"uploaded")[0], 200, "a SigV2 presigned PUT")
eq(body(s3, B, "put by v2"), b"uploaded", "what it stored")
with mock.patch("time.time", return_value=time.time() - 1200):
    stale = s3.generate_presigned_url("get_object", Params={"Bucket": B, "Key": "a b+c/é"}, ExpiresIn=600)
eq(fetch(stale)[::2], (403, "AccessDenied"), "a SigV2 URL expired 10 minutes ago")
eq(fetch(url.replace("Expires=", "Expires=9"))[::2], (403, "SignatureDoesNotMatch"), "a longer life than signed")
# a sub-resource added to a signed URL is outside its signature, also with its name
# percent-escaped (it was left out of the string to sign and then acted on: a GET URL served
# the object as text/html, a DELETE URL aborted an upload, a PUT URL replaced a part)
for added in ["&response-content-type=text/html", "&response-content-typ%65=text/html", "&upload%49d=1"]:
    eq(fetch(url + added)[::2], (403, "SignatureDoesNotMatch"), f"a signed URL with {added} added")
mp = s3.create_multipart_upload(Bucket=B, Key="victim")["UploadId"]
gone = s3.generate_presigned_url("delete_object", Params={"Bucket": B, "Key": "victim"}, ExpiresIn=300)
eq(fetch(gone + "&upload%49d=" + mp, "DELETE")[::2], (403, "SignatureDoesNotMatch"), "a DELETE URL made an Abort")
eq(len(s3.list_multipart_uploads(Bucket=B, Prefix="victim").get("Uploads", [])), 1, "the upload is still there")
s3.abort_multipart_upload(Bucket=B, Key="victim", UploadId=mp)
forged = client(secret="not-the-secret").generate_presigned_url("get_object", Params={"Bucket": B, "Key": "a b+c/é"})
eq(fetch(forged)[::2], (403, "SignatureDoesNotMatch"), "a SigV2 URL signed with a wrong secret")
unknown = client(access="unknown").generate_presigned_url("get_object", Params={"Bucket": B, "Key": "a b+c/é"})
eq(fetch(unknown)[::2], (403, "InvalidAccessKeyId"), "a SigV2 URL of an unknown key")

# requests signed with SigV2 headers
v2 = client(signature_version="s3")
v2.put_object(Bucket=B, Key="dir/v2", Body=b"header v2", Metadata={"m": "1"}, ContentType="text/plain")
eq(body(v2, B, "dir/v2"), b"header v2", "a SigV2-signed GET")
eq(v2.head_object(Bucket=B, Key="dir/v2")["Metadata"], {"m": "1"}, "a SigV2-signed HEAD")
eq([o["Key"] for o in v2.list_objects(Bucket=B, Prefix="dir/", Delimiter="/")["Contents"]], ["dir/v2"], "list v1")
eq(v2.list_objects_v2(Bucket=B, Prefix="put")["KeyCount"], 1, "list v2")
up = v2.create_multipart_upload(Bucket=B, Key="mp")["UploadId"]
tag = v2.upload_part(Bucket=B, Key="mp", UploadId=up, PartNumber=1, Body=b"one part")["ETag"]
eq(len(v2.list_parts(Bucket=B, Key="mp", UploadId=up)["Parts"]), 1, "ListParts")
v2.complete_multipart_upload(Bucket=B, Key="mp", UploadId=up, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": tag}]})
eq(body(s3, B, "mp"), b"one part", "a SigV2 multipart upload")
v2.delete_objects(Bucket=B, Delete={"Objects": [{"Key": "mp"}]})
eq(error_of(v2.get_object, Bucket=B, Key="mp"), (404, "NoSuchKey"), "deleted with SigV2")
eq(error_of(client(signature_version="s3", secret="wrong").get_object, Bucket=B, Key="dir/v2"),
   (403, "SignatureDoesNotMatch"), "a SigV2 header with a wrong secret")
eq(error_of(client(signature_version="s3", access="unknown").get_object, Bucket=B, Key="dir/v2"),
   (403, "InvalidAccessKeyId"), "a SigV2 header of an unknown key")
with mock.patch("botocore.auth.formatdate", return_value=time.strftime("%a, %d %b %Y %H:%M:%S GMT",
                                                                       time.gmtime(time.time() - 1200))):
    eq(error_of(client(signature_version="s3").get_object, Bucket=B, Key="dir/v2"), (403, "RequestTimeTooSkewed"),
       "a SigV2 request 20 minutes old")
done()
