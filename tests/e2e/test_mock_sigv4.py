"""The mock provider's SigV4 verifier (used to check the filter's Bedrock signatures) against
AWS's published SigV4 test suite, so the two implementations cannot agree on a wrong answer."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import mock_provider  # noqa: E402

VECTORS = [  # aws-sig-v4-test-suite: get-vanilla, get-vanilla-query-order-key-case, post-vanilla
    ("GET", "/", "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
    ("GET", "/?Param2=value2&Param1=value1", "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"),
    ("POST", "/", "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
]


def headers(signature):
    return {"host": "example.amazonaws.com", "x-amz-date": "20150830T123600Z",
            "authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
                             f"SignedHeaders=host;x-amz-date, Signature={signature}"}


def test_verifier_accepts_aws_vectors_and_rejects_tampering(monkeypatch):
    monkeypatch.setitem(mock_provider.MOCK_AWS_SECRETS, "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    for method, path, signature in VECTORS:
        assert mock_provider.sigv4_problem(method, path, headers(signature), b"", service_name="service") is None, path
        assert mock_provider.sigv4_problem(method, path + "x", headers(signature), b"", service_name="service"), path
        assert mock_provider.sigv4_problem(method, path, headers(signature), b"x", service_name="service"), path
