"""SigV4 signing held to AWS's published `aws-sig-v4-test-suite` and to botocore's own signer.

The suite's vectors (credentials AKIDEXAMPLE / wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, region
us-east-1, service `service`, 20150830T123600Z) sign only the headers its requests carry, so they
are signed here without `x-amz-content-sha256` (which the AWS SDKs, and Bedrock requests, add).
"""

from __future__ import annotations

import calendar
import hashlib
import time

import pytest

from proxy.auth.sigv4 import AwsCredentials, Signer, canonical_request, signing_key

SUITE = AwsCredentials(access_key_id="AKIDEXAMPLE", secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
WHEN = calendar.timegm((2015, 8, 30, 12, 36, 0))
SCOPE = "AKIDEXAMPLE/20150830/us-east-1/service/aws4_request"
# The suite's example session token (post-sts-token).
STS_TOKEN = (
    "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfK"
    "D8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx"
    "6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJ"
    "abIQwj2ICCR/oLxBA=="
)

# (suite case, method, url, headers, body, session token, signed headers, signature)
VECTORS = [
    (
        "get-vanilla",
        "GET",
        "https://example.amazonaws.com/",
        {},
        b"",
        None,
        "host;x-amz-date",
        "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
    ),
    (
        "post-vanilla",
        "POST",
        "https://example.amazonaws.com/",
        {},
        b"",
        None,
        "host;x-amz-date",
        "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
    ),
    (
        "post-vanilla-query",
        "POST",
        "https://example.amazonaws.com/?Param1=value1",
        {},
        b"",
        None,
        "host;x-amz-date",
        "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11",
    ),
    (
        "get-vanilla-query-order-key-case",
        "GET",
        "https://example.amazonaws.com/?Param2=value2&Param1=value1",
        {},
        b"",
        None,
        "host;x-amz-date",
        "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
    ),
    (
        "post-x-www-form-urlencoded",
        "POST",
        "https://example.amazonaws.com/",
        {"Content-Type": "application/x-www-form-urlencoded"},
        b"Param1=value1",
        None,
        "content-type;host;x-amz-date",
        "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a",
    ),
    (
        "get-header-value-trim",
        "GET",
        "https://example.amazonaws.com/",
        {"My-Header1": " value1", "My-Header2": ' "a   b   c"'},
        b"",
        None,
        "host;my-header1;my-header2;x-amz-date",
        "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
    ),
    (
        "post-sts-token/post-sts-header-before",
        "POST",
        "https://example.amazonaws.com/",
        {},
        b"",
        STS_TOKEN,
        "host;x-amz-date;x-amz-security-token",
        "85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead",
    ),
]


@pytest.mark.parametrize(
    ("method", "url", "headers", "body", "token", "signed", "signature"),
    [v[1:] for v in VECTORS],
    ids=[v[0] for v in VECTORS],
)
def test_the_aws_sig_v4_test_suite(
    method: str, url: str, headers: dict[str, str], body: bytes, token: str | None, signed: str, signature: str
) -> None:
    signer = Signer(region="us-east-1", service="service", sign_payload_header=False)
    credentials = AwsCredentials(SUITE.access_key_id, SUITE.secret_access_key, token)
    result = signer.sign(method=method, url=url, headers=headers, body=body, credentials=credentials, now=WHEN)
    assert result.signature == signature
    assert result.headers["authorization"] == (
        f"AWS4-HMAC-SHA256 Credential={SCOPE}, SignedHeaders={signed}, Signature={signature}"
    )
    assert result.headers["x-amz-date"] == "20150830T123600Z"
    assert result.headers.get("x-amz-security-token") == token


def test_post_x_www_form_urlencoded_intermediate_steps() -> None:
    """The suite's .creq and .sts for post-x-www-form-urlencoded, step by step."""
    signer = Signer(region="us-east-1", service="service", sign_payload_header=False)
    result = signer.sign(
        method="POST",
        url="https://example.amazonaws.com/",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        body=b"Param1=value1",
        credentials=SUITE,
        now=WHEN,
    )
    assert result.canonical_request == (
        "POST\n/\n\ncontent-type:application/x-www-form-urlencoded\nhost:example.amazonaws.com\n"
        "x-amz-date:20150830T123600Z\n\ncontent-type;host;x-amz-date\n"
        "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"
    )
    assert result.string_to_sign == (
        "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n"
        "42a5e5bb34198acb3e84da4f085bb7927f2bc277ca766e6d19c73c2154021281"
    )


def test_the_derived_key_of_the_aws_documentation_example() -> None:
    # AWS's "derive a signing key" example: secret wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, 20120215, us-east-1, iam
    key = signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1", "iam")
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


def test_repeated_headers_join_with_commas() -> None:
    request, signed = canonical_request(
        method="get", path="/", query="", headers=[("My-Header1", "value2"), ("my-header1", "value1")], payload_hash="h"
    )
    assert "my-header1:value2,value1\n" in request and signed == "my-header1"


def _botocore_signature(method: str, url: str, headers: dict[str, str], body: bytes, creds: AwsCredentials) -> str:
    auth = pytest.importorskip("botocore.auth")
    awsrequest = pytest.importorskip("botocore.awsrequest")
    credentials = pytest.importorskip("botocore.credentials")
    request = awsrequest.AWSRequest(method=method, url=url, headers=headers, data=body)
    signer = auth.SigV4Auth(
        credentials.Credentials(creds.access_key_id, creds.secret_access_key, creds.session_token),
        "bedrock",
        "eu-central-1",
    )
    request.context["timestamp"] = headers["x-amz-date"]
    canonical = signer.canonical_request(request)
    return str(signer.signature(signer.string_to_sign(request, canonical), request))


@pytest.mark.parametrize(
    "model",
    ["anthropic.claude-3-5-haiku-20241022-v1:0", "arn:aws:bedrock:eu-central-1:123456789012:inference-profile/eu.x"],
)
@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzEJr//////////session+token/=="])
def test_a_bedrock_request_signs_as_botocore_signs_it(model: str, token: str | None) -> None:
    """Model ids with `:` and ARNs with `/` in the path: the double encoding every service but S3 wants."""
    from urllib.parse import quote

    url = f"https://bedrock-runtime.eu-central-1.amazonaws.com/model/{quote(model, safe='')}/converse-stream"
    body = b'{"messages":[{"role":"user","content":[{"text":"hi \xc3\xa9"}]}]}'
    creds = AwsCredentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", token)
    headers = {"content-type": "application/json", "accept": "application/vnd.amazon.eventstream"}
    now = time.time()
    ours = Signer(region="eu-central-1", service="bedrock").sign(
        method="POST", url=url, headers=headers, body=body, credentials=creds, now=now
    )
    assert ours.headers["x-amz-content-sha256"] == hashlib.sha256(body).hexdigest()
    sent = {**headers, **{k: v for k, v in ours.headers.items() if k != "authorization"}}
    assert ours.signature == _botocore_signature("POST", url, sent, body, creds)


def test_the_secret_is_in_no_output() -> None:
    signer = Signer(region="us-east-1", service="service")
    credentials = AwsCredentials(SUITE.access_key_id, SUITE.secret_access_key, "tok")
    result = signer.sign(method="POST", url="https://h/", headers={}, body=b"", credentials=credentials, now=WHEN)
    assert SUITE.secret_access_key not in repr(result) + repr(credentials) + repr(signer)
    assert "tok" not in repr(credentials)


def test_the_host_header_carries_a_non_default_port() -> None:
    result = Signer(region="us-east-1", service="service").sign(
        method="POST", url="http://127.0.0.1:8123/x", headers={}, body=b"", credentials=SUITE, now=WHEN
    )
    assert "\nhost:127.0.0.1:8123\n" in result.canonical_request
