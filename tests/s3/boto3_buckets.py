"""boto3 on buckets: create/head/delete, list buckets (made ones and implicit ones),
location, NoSuchBucket and BucketNotEmpty; DeleteObjects with and without Quiet."""

from common import ENDPOINT, body, client, done, eq, error_of

s3 = client()

eq(s3.list_buckets()["Buckets"], [], "no buckets yet")
eq(error_of(s3.head_bucket, Bucket="made"), (404, "404"), "HEAD of a missing bucket")
r = s3.create_bucket(Bucket="made")
eq(r["ResponseMetadata"]["HTTPStatusCode"], 200, "CreateBucket")
eq(r["Location"], "/made", "CreateBucket Location")
s3.create_bucket(Bucket="made")  # again: S3 in us-east-1 answers 200 to its owner
eq(s3.head_bucket(Bucket="made")["ResponseMetadata"]["HTTPStatusCode"], 200, "HEAD of a made bucket")
eq(s3.get_bucket_location(Bucket="made")["LocationConstraint"], None, "us-east-1 is the null location")
eq(s3.list_objects_v2(Bucket="made")["KeyCount"], 0, "an empty made bucket lists")

# a bucket exists while it holds keys, never created or not
s3.put_object(Bucket="implicit", Key="k", Body=b"v")
eq(s3.head_bucket(Bucket="implicit")["ResponseMetadata"]["HTTPStatusCode"], 200, "HEAD of an implicit bucket")
names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
eq(names, ["implicit", "made"], "ListBuckets")
# a prefix, and pages (`aws s3 ls --bucket-name-prefix`, the paginator)
r = s3.list_buckets(Prefix="ma")
eq(([b["Name"] for b in r["Buckets"]], r.get("Prefix")), (["made"], "ma"), "ListBuckets with a prefix")
r = s3.list_buckets(MaxBuckets=1)
eq(([b["Name"] for b in r["Buckets"]], "ContinuationToken" in r), (["implicit"], True), "a first page")
r = s3.list_buckets(MaxBuckets=1, ContinuationToken=r["ContinuationToken"])
eq(([b["Name"] for b in r["Buckets"]], "ContinuationToken" in r), (["made"], False), "the last page")
pages = s3.get_paginator("list_buckets").paginate(PaginationConfig={"PageSize": 1})
eq([b["Name"] for p in pages for b in p["Buckets"]], ["implicit", "made"], "the paginator")
# every bucket is dated, implicit ones too (by a key's time: not 1970)
for b in s3.list_buckets()["Buckets"]:
    eq(b["CreationDate"].year >= 2024, True, f"CreationDate of {b['Name']}: {b['CreationDate']}")

eq(error_of(s3.delete_bucket, Bucket="implicit"), (409, "BucketNotEmpty"), "DeleteBucket of a full bucket")
eq(body(s3, "implicit", "k"), b"v", "the key after a refused DeleteBucket")
eq(s3.delete_bucket(Bucket="made")["ResponseMetadata"]["HTTPStatusCode"], 204, "DeleteBucket")
eq(error_of(s3.head_bucket, Bucket="made"), (404, "404"), "HEAD after DeleteBucket")
# S3.md: DeleteBucket is 204 or 409 (a bucket nobody made is gone with its last key)
eq(s3.delete_bucket(Bucket="made")["ResponseMetadata"]["HTTPStatusCode"], 204, "DeleteBucket twice")
eq(error_of(s3.list_objects_v2, Bucket="made"), (404, "NoSuchBucket"), "listing a deleted bucket")
# buckets are implicit (S3.md): any name is in the server's region (a client given none asks
# it before writing into a bucket never created, and MinIO's SDK failed that write)
eq(s3.get_bucket_location(Bucket="made")["LocationConstraint"], None, "location of a deleted bucket")
eq(s3.get_bucket_location(Bucket="never-made")["LocationConstraint"], None, "location of a bucket never made")
eq(error_of(s3.create_bucket, Bucket="Bad_Name"), (400, "InvalidBucketName"), "a bad bucket name")
eq(error_of(s3.create_bucket, Bucket="ab"), (400, "InvalidBucketName"), "a name too short to create")

# one namespace (S3.md): native keys whose first segment is no name S3 lets one create today
# (minikeyvalue's, any name) are reached as S3's legacy bucket names (up to 255 letters,
# digits, '.', '-', '_', any case), as botocore sends them; they were InvalidBucketName
import http.client  # noqa: E402
import urllib.parse  # noqa: E402

native = http.client.HTTPConnection(urllib.parse.urlsplit(ENDPOINT).netloc, timeout=30)
for key in ["/ab/k", "/My_Photos/2024/k"]:
    native.request("PUT", key, body=key.encode())
    r = native.getresponse()
    r.read()
    eq(r.status, 201, f"native PUT {key}")
eq(body(s3, "ab", "k"), b"/ab/k", "GetObject from a two-letter bucket")
eq(body(s3, "My_Photos", "2024/k"), b"/My_Photos/2024/k", "GetObject from a legacy-named bucket")
eq([o["Key"] for o in s3.list_objects_v2(Bucket="My_Photos")["Contents"]], ["2024/k"], "its listing")
eq({"My_Photos", "ab"} <= {b["Name"] for b in s3.list_buckets()["Buckets"]}, True, "ListBuckets names them")
s3.delete_object(Bucket="ab", Key="k")
s3.delete_object(Bucket="My_Photos", Key="2024/k")

# DeleteObjects: every key named answers Deleted (missing ones too); Quiet answers only errors
keys = [f"d/{i}" for i in range(10)]
for k in keys:
    s3.put_object(Bucket="implicit", Key=k, Body=k.encode())
r = s3.delete_objects(Bucket="implicit", Delete={"Objects": [{"Key": k} for k in keys[:5] + ["d/missing"]]})
eq(sorted(d["Key"] for d in r["Deleted"]), sorted(keys[:5] + ["d/missing"]), "Deleted")
eq(r.get("Errors", []), [], "no Errors")
# mkv keeps no versions: a version asked for is not there, and the live object stays
r = s3.delete_objects(Bucket="implicit", Delete={"Objects": [{"Key": keys[5], "VersionId": "3HL4kqtJlcpXro"}]})
eq([(e["Key"], e["Code"]) for e in r.get("Errors", [])], [(keys[5], "NoSuchVersion")], "a version")
eq(r.get("Deleted", []), [], "no version deleted")
eq(s3.head_object(Bucket="implicit", Key=keys[5])["ContentLength"] >= 0, True, "the object is kept")
r = s3.delete_objects(Bucket="implicit", Delete={"Objects": [{"Key": k} for k in keys[5:]], "Quiet": True})
eq((r.get("Deleted", []), r.get("Errors", [])), ([], []), "Quiet: nothing said of what went well")
eq([o["Key"] for o in s3.list_objects_v2(Bucket="implicit")["Contents"]], ["k"], "what DeleteObjects left")

# a bucket made in a region says so: GetBucketLocation and HeadBucket give it back
r = s3.create_bucket(Bucket="placed", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
eq(r["ResponseMetadata"]["HTTPStatusCode"], 200, "CreateBucket with a location")
eq(s3.get_bucket_location(Bucket="placed")["LocationConstraint"], "eu-west-1", "the location kept")
eq(s3.head_bucket(Bucket="placed")["ResponseMetadata"]["HTTPHeaders"]["x-amz-bucket-region"], "eu-west-1",
   "HeadBucket's region")
eq(error_of(s3.create_bucket, Bucket="badplace", CreateBucketConfiguration={"LocationConstraint": "<eu>"}),
   (400, "InvalidLocationConstraint"), "a location that is no region's name")
s3.delete_bucket(Bucket="placed")

s3.delete_object(Bucket="implicit", Key="k")
eq(s3.list_buckets()["Buckets"], [], "an implicit bucket goes with its last key")
eq(error_of(s3.head_bucket, Bucket="implicit"), (404, "404"), "HEAD of an emptied implicit bucket")
done()
