"""boto3 listings, v1 and v2: prefix, delimiter, max-keys, continuation, start-after,
marker, encoding-type=url (botocore asks for it and decodes it), keys with spaces, `+`,
unicode and XML's special characters."""

import botocore.handlers

from common import Wire, client, done, eq, error_of

B = "listings"
s3 = client()
wire = Wire(s3)
s3.create_bucket(Bucket=B)

keys = sorted([
    "a b/one.txt", "a b/two words.txt", "plus+sign", "plus+sign/x", "ünï/cödé", "ünï/ß",
    "amp&lt<gt>\"quote'", "photos/2024/jan/1.jpg", "photos/2024/feb/2.jpg", "photos/2025/3.jpg",
    "photos/top.jpg", "z",
] + [f"many/{i:03d}" for i in range(25)], key=lambda k: k.encode())
for i, k in enumerate(keys):
    s3.put_object(Bucket=B, Key=k, Body=b"x" * i)


def v2_all(**kw):
    """Every page of a v2 listing: (keys, common prefixes, pages)."""
    got, prefixes, pages, token = [], [], 0, None
    while True:
        args = dict(kw, **({"ContinuationToken": token} if token else {}))
        r = s3.list_objects_v2(Bucket=B, **args)
        pages += 1
        got += [o["Key"] for o in r.get("Contents", [])]
        prefixes += [p["Prefix"] for p in r.get("CommonPrefixes", [])]
        eq(r["KeyCount"], len(r.get("Contents", [])) + len(r.get("CommonPrefixes", [])), "KeyCount")
        if not r["IsTruncated"]:
            assert "NextContinuationToken" not in r, r
            return got, prefixes, pages
        token = r["NextContinuationToken"]


def v1_all(**kw):
    got, prefixes, pages, marker = [], [], 0, None
    while True:
        r = s3.list_objects(Bucket=B, **dict(kw, **({"Marker": marker} if marker else {})))
        pages += 1
        got += [o["Key"] for o in r.get("Contents", [])]
        prefixes += [p["Prefix"] for p in r.get("CommonPrefixes", [])]
        if not r["IsTruncated"]:
            return got, prefixes, pages
        # S3 gives NextMarker only with a delimiter; then the last key is the marker
        marker = r.get("NextMarker") or r["Contents"][-1]["Key"]


# everything, in S3's (byte-wise) order, with sizes and ETags
r = s3.list_objects_v2(Bucket=B)
eq([o["Key"] for o in r["Contents"]], keys, "v2 keys")
eq([o["Size"] for o in r["Contents"]], [keys.index(k) for k in keys], "v2 sizes")
eq(r["Contents"][3]["ETag"], s3.head_object(Bucket=B, Key=keys[3])["ETag"], "v2 ETag")
assert "encoding-type=url" in wire.sent[-2][1], wire.sent[-2][1]  # botocore asks; the answer decoded
eq((r["KeyCount"], r["MaxKeys"], r["IsTruncated"]), (len(keys), 1000, False), "v2 counts")

# pages of 7, v2 and v1
eq(v2_all(MaxKeys=7), (keys, [], (len(keys) + 6) // 7), "v2 pages")
eq(v1_all(MaxKeys=7), (keys, [], (len(keys) + 6) // 7), "v1 pages")
# max-keys=0: nothing, and not truncated (as S3 answers; a client looping on IsTruncated
# would otherwise never end, having no token to go on with)
r = s3.list_objects_v2(Bucket=B, MaxKeys=0)
eq((r["KeyCount"], r["IsTruncated"], r.get("NextContinuationToken")), (0, False, None), "v2 max-keys=0")
r = s3.list_objects(Bucket=B, MaxKeys=0, Delimiter="/")
eq((r.get("Contents"), r["IsTruncated"], r.get("NextMarker")), (None, False, None), "v1 max-keys=0")

# prefix and delimiter
tops = sorted({k.split("/")[0] + "/" for k in keys if "/" in k}, key=str.encode)
loose = [k for k in keys if "/" not in k]
eq(v2_all(Delimiter="/"), (loose, tops, 1), "v2 delimiter")
eq(v1_all(Delimiter="/"), (loose, tops, 1), "v1 delimiter")
eq(v2_all(Delimiter="/", MaxKeys=2)[:2], (loose, tops), "v2 delimiter in pages of 2")
eq(v1_all(Delimiter="/", MaxKeys=2)[:2], (loose, tops), "v1 delimiter in pages of 2")
eq(v2_all(Prefix="photos/", Delimiter="/"), (["photos/top.jpg"], ["photos/2024/", "photos/2025/"], 1), "prefix+delimiter")
eq(v2_all(Prefix="photos/2024/"), (["photos/2024/feb/2.jpg", "photos/2024/jan/1.jpg"], [], 1), "prefix")
eq(v2_all(Prefix="photos/2", Delimiter="/"), ([], ["photos/2024/", "photos/2025/"], 1), "partial prefix")
eq(v2_all(Prefix="nothing/"), ([], [], 1), "empty prefix listing")
eq(v2_all(Prefix="ünï/"), (["ünï/cödé", "ünï/ß"], [], 1), "unicode prefix")
eq(v2_all(Prefix="a b/", Delimiter="/"), (["a b/one.txt", "a b/two words.txt"], [], 1), "prefix with a space")
eq(v2_all(Prefix="plus+"), (["plus+sign", "plus+sign/x"], [], 1), "prefix with a plus")
eq(v2_all(Delimiter="+"), ([k for k in keys if "+" not in k], ["plus+"], 1), "delimiter +")

# start-after (v2) and marker (v1)
after = keys.index("photos/top.jpg")
eq(v2_all(StartAfter="photos/top.jpg")[0], keys[after + 1:], "start-after")
eq(v2_all(StartAfter="photos/top.jpg", MaxKeys=1)[0], keys[after + 1:], "start-after in pages of 1")
eq(v1_all(Marker="photos/top.jpg")[0], keys[after + 1:], "marker")
eq(v2_all(StartAfter="ünï/cödé")[0], keys[keys.index("ünï/cödé") + 1:], "unicode start-after")
# a start-after inside a common prefix: the prefix still holds keys after it, so it is listed
# (only a marker that is the prefix itself, as a page's NextMarker is, steps over it)
eq(v2_all(Prefix="photos/", Delimiter="/", StartAfter="photos/2024/feb"),
   (["photos/top.jpg"], ["photos/2024/", "photos/2025/"], 1), "start-after inside a common prefix")
eq(v2_all(Prefix="photos/", Delimiter="/", StartAfter="photos/2024/feb", MaxKeys=1),
   (["photos/top.jpg"], ["photos/2024/", "photos/2025/"], 3), "start-after inside a common prefix, pages of 1")
eq(v1_all(Prefix="photos/", Delimiter="/", Marker="photos/2024/feb"),
   (["photos/top.jpg"], ["photos/2024/", "photos/2025/"], 1), "marker inside a common prefix")
eq(v2_all(Prefix="photos/", Delimiter="/", StartAfter="photos/2024/"),
   (["photos/top.jpg"], ["photos/2025/"], 1), "start-after that is a common prefix")
eq(v2_all(Prefix="photos/", Delimiter="/", StartAfter="photos/2024/jan/1.jpg"),
   (["photos/top.jpg"], ["photos/2025/"], 1), "start-after past a common prefix's last key")

# the raw answer of encoding-type=url: keys percent-encoded, prefixes too
raw = client()
seen = []
raw.meta.events.register("after-call.s3.ListObjectsV2", lambda http_response, **kw: seen.append(http_response.content))
raw.list_objects_v2(Bucket=B, Prefix="a b/", Delimiter="/", EncodingType="url")
xml = seen[-1].decode()
assert "<Key>a%20b/two%20words.txt</Key>" in xml, xml
assert "<Prefix>a%20b/</Prefix>" in xml, xml
assert "<EncodingType>url</EncodingType>" in xml, xml
raw.list_objects_v2(Bucket=B, Prefix="plus")
assert "<Key>plus%2Bsign</Key>" in seen[-1].decode(), seen[-1]

# XML-escaped without encoding-type: the special characters come back whole
plain = client()
plain.meta.events.unregister("before-parameter-build.s3.ListObjectsV2",
                             botocore.handlers.set_list_objects_encoding_type_url)
got = plain.list_objects_v2(Bucket=B, Prefix="amp")["Contents"][0]["Key"]
eq(got, "amp&lt<gt>\"quote'", "an XML-escaped key")

eq(error_of(s3.list_objects_v2, Bucket="never-made"), (404, "NoSuchBucket"), "listing a missing bucket")
done()
