"""-s3-keys: signed requests from a known key work (header and presigned SigV4, a signed
aws-chunked body as over https); a wrong secret, an unknown key, a request 20 minutes
old, an expired presigned URL and an unsigned request are refused with S3's codes."""

import datetime

import botocore.auth
from botocore.config import Config

from common import ACCESS, ENDPOINT, as_over_https, body, client, done, eq, error_of, fetch

B = "keyed"
s3 = client()
s3.create_bucket(Bucket=B)
s3.put_object(Bucket=B, Key="k", Body=b"signed value", Metadata={"m": "1"})
eq(body(s3, B, "k"), b"signed value", "a signed GET")
eq(s3.list_objects_v2(Bucket=B)["KeyCount"], 1, "a signed listing")
big = b"q" * (3 << 20)
s3.put_object(Bucket=B, Key="big", Body=big)
eq(body(s3, B, "big"), big, "a signed 3 MiB body")
with as_over_https():
    https = client()
    https.put_object(Bucket=B, Key="chunked", Body=big)  # STREAMING-UNSIGNED-PAYLOAD-TRAILER, signed head
eq(body(s3, B, "chunked"), big, "a signed aws-chunked body")
# keys and query strings that must be canonicalized exactly as the client signed them
for key in ["with space", "plus+sign", "ünï", "a/b=c&d", "tilde~*'()!$"]:
    s3.put_object(Bucket=B, Key=key, Body=key.encode())
    eq(body(s3, B, key), key.encode(), f"signed key {key!r}")
eq(len(s3.list_objects_v2(Bucket=B, Prefix="plus+", StartAfter="a b")["Contents"]), 1, "signed query")

# refusals
eq(error_of(client(secret="not-the-secret").get_object, Bucket=B, Key="k"), (403, "SignatureDoesNotMatch"),
   "a wrong secret")
eq(error_of(client(secret="not-the-secret").put_object, Bucket=B, Key="k", Body=b"forged"),
   (403, "SignatureDoesNotMatch"), "a PUT with a wrong secret")
eq(error_of(client(access="unknown-access").get_object, Bucket=B, Key="k"), (403, "InvalidAccessKeyId"),
   "an unknown access key")
eq(error_of(client(access="other-access", secret=ACCESS).get_object, Bucket=B, Key="k"),
   (403, "SignatureDoesNotMatch"), "a known key with another's secret")

now = botocore.auth.get_current_datetime
botocore.auth.get_current_datetime = lambda: now() - datetime.timedelta(minutes=20)
try:
    eq(error_of(client().get_object, Bucket=B, Key="k"), (403, "RequestTimeTooSkewed"), "20 minutes old")
    stale = client(signature_version="s3v4").generate_presigned_url(
        "get_object", Params={"Bucket": B, "Key": "k"}, ExpiresIn=600)
finally:
    botocore.auth.get_current_datetime = now
eq(body(s3, B, "k"), b"signed value", "the value after the refusals")


# presigned SigV4 URLs: valid, expired, tampered with
v4 = client(signature_version="s3v4")
url = v4.generate_presigned_url("get_object", Params={"Bucket": B, "Key": "k"}, ExpiresIn=300)
assert "X-Amz-Signature=" in url, url
eq(fetch(url)[:2], (200, b"signed value"), "a presigned GET")
eq(fetch(url.replace("/k?", "/big?"))[::2], (403, "SignatureDoesNotMatch"), "a presigned URL for another key")
eq(fetch(stale)[::2], (403, "AccessDenied"), "a presigned URL expired 10 minutes ago")
put_url = v4.generate_presigned_url("put_object", Params={"Bucket": B, "Key": "presigned-put"}, ExpiresIn=300)
eq(fetch(put_url, "PUT", b"put by URL")[0], 200, "a presigned PUT")
eq(body(s3, B, "presigned-put"), b"put by URL", "what the presigned PUT stored")
head_url = v4.generate_presigned_url("head_object", Params={"Bucket": B, "Key": "k"}, ExpiresIn=300)
eq(fetch(head_url, "HEAD")[0], 200, "a presigned HEAD")

# unsigned requests are refused
eq(fetch(f"{ENDPOINT}/{B}/k?x-id=GetObject")[::2], (403, "AccessDenied"), "an anonymous GET")
eq(fetch(f"{ENDPOINT}/{B}?list-type=2")[::2], (403, "AccessDenied"), "an anonymous listing")
done()
