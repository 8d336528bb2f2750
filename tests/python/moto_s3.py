"""Prepares a moto S3 server (`python -m moto.server`) for tests/s3_archive.rs.

    python moto_s3.py ENDPOINT BUCKET [BUCKET...]

While moto still accepts unsigned requests: creates an IAM user allowed every S3 action
and an access key for it, then the buckets (with that key). Then turns authentication
on (moto's /moto-api/reset-auth), so from here on every request must be signed with a
known access key and its secret: a wrong key or secret is refused with 403, as AWS
does. Prints {"access_key_id": ..., "secret_access_key": ...} on stdout.
"""

import json
import sys
import urllib.request

import boto3
import botocore.exceptions


def main() -> None:
    endpoint, buckets = sys.argv[1], sys.argv[2:]
    common = {"endpoint_url": endpoint, "region_name": "us-east-1"}
    setup = {"aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
    iam = boto3.client("iam", **common, **setup)
    iam.create_user(UserName="mcpulse")
    key = iam.create_access_key(UserName="mcpulse")["AccessKey"]
    iam.put_user_policy(
        UserName="mcpulse",
        PolicyName="archive",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
            }
        ),
    )
    creds = {
        "aws_access_key_id": key["AccessKeyId"],
        "aws_secret_access_key": key["SecretAccessKey"],
    }
    s3 = boto3.client("s3", **common, **creds)
    for bucket in buckets:
        s3.create_bucket(Bucket=bucket)

    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth",
        data=b"0",
        method="POST",
        # Not a form: moto reads the raw body.
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200, response.read()

    # Authentication is on: the key works, a wrong secret does not.
    s3.list_objects_v2(Bucket=buckets[0])
    wrong = boto3.client(
        "s3",
        **common,
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key="wrong-" + key["SecretAccessKey"],
    )
    try:
        wrong.list_objects_v2(Bucket=buckets[0])
    except botocore.exceptions.ClientError as e:
        assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 403, e.response
    else:
        sys.exit("moto accepted a wrong secret: authentication is not on")

    print(
        json.dumps(
            {
                "access_key_id": key["AccessKeyId"],
                "secret_access_key": key["SecretAccessKey"],
            }
        )
    )


if __name__ == "__main__":
    main()
