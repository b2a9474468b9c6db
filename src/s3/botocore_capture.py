# Captures what boto3 puts on the wire (method, target, headers, body) at a frozen time: the
# vectors of botocore_tests.rs. Run with boto3 installed; prints JSON. Nothing is sent anywhere.
import datetime, json, base64, sys
from unittest import mock
import boto3, botocore.auth
from botocore.awsrequest import AWSResponse
from botocore.config import Config

FROZEN = datetime.datetime(2024, 5, 1, 12, 0, 0)
captured = []

class Raw:
    def __init__(self, b): self.b = b
    def stream(self, **kw): yield self.b
    def read(self, *a, **kw): return self.b

def before_send(request, **kw):
    body = request.body
    if hasattr(body, 'read'):
        body = body.read()
    if isinstance(body, str):
        body = body.encode()
    url = request.url.split('://', 1)[1]
    target = url[url.index('/'):]
    captured.append({
        'method': request.method,
        'target': target,
        'headers': [[k, v.decode() if isinstance(v, bytes) else v] for k, v in request.headers.items()],
        'body': base64.b64encode(body or b'').decode(),
    })
    return AWSResponse(request.url, 200, {}, Raw(b''))

def client(endpoint, **cfg):
    c = boto3.client('s3', endpoint_url=endpoint, aws_access_key_id='mkvtestkey', aws_secret_access_key='mkv/test+secret',
                     region_name='us-east-1', config=Config(s3={'addressing_style': 'path'}, retries={'max_attempts': 1}, **cfg))
    c.meta.events.register('before-send.s3', before_send)
    return c

with mock.patch('botocore.auth.get_current_datetime', return_value=FROZEN), \
     mock.patch('botocore.signers.datetime') as sdt:
    sdt.datetime.utcnow.return_value = FROZEN
    sdt.timedelta = datetime.timedelta
    http = client('http://127.0.0.1:3000')
    for call in [
        lambda: http.put_object(Bucket='b12', Key="dir/a b+c!~*()'é.txt", Body=b'hello', ContentType='text/plain', Metadata={'color': 'blue'}),
        lambda: http.list_objects_v2(Bucket='b12', Prefix='a b/', Delimiter='/', StartAfter='a b/x+y'),
        lambda: http.delete_objects(Bucket='b12', Delete={'Objects': [{'Key': 'a&b'}, {'Key': 'c d'}], 'Quiet': True}),
        lambda: http.upload_part(Bucket='b12', Key='big', PartNumber=2, UploadId='u-1', Body=b'part two'),
        lambda: http.complete_multipart_upload(Bucket='b12', Key='big', UploadId='u-1', MultipartUpload={'Parts': [
            {'PartNumber': 1, 'ETag': '"aa"'}, {'PartNumber': 2, 'ETag': '"bb"'}]}),
        lambda: http.copy_object(Bucket='b12', Key='copy', CopySource={'Bucket': 'b12', 'Key': 'a b+c'}),
    ]:
        try:
            call()
        except Exception as e:
            print('ignored', type(e).__name__, e, file=sys.stderr)
    https = client('https://127.0.0.1:3000')
    try:
        https.put_object(Bucket='b12', Key='over https', Body=b'hello world')
    except Exception as e:
        print('ignored', type(e).__name__, e, file=sys.stderr)
    v4 = client('http://127.0.0.1:3000', signature_version='s3v4')
    for method, op in [('GET', 'get_object'), ('PUT', 'put_object')]:
        url = v4.generate_presigned_url(op, Params={'Bucket': 'b12', 'Key': 'k with space+plus'}, ExpiresIn=3600)
        u = url.split('://', 1)[1]
        captured.append({'method': method, 'target': u[u.index('/'):], 'headers': [], 'body': ''})
json.dump(captured, sys.stdout, indent=1)
