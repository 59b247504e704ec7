"""Detectors by content: formats, checksums and ranges, and the look-alikes they must leave alone."""

from __future__ import annotations

import pytest

from masking import MaskingEngine
from masking.detectors import (
    blind_index,
    card_ok,
    iban_ok,
    ipv4_ok,
    ipv6_ok,
    luhn_ok,
    normalise,
    npi_ok,
    ssn_ok,
)

KEY = b"k" * 32


def found(engine: MaskingEngine, text: str) -> list[tuple[str, str]]:
    _, findings = engine.mask_text(text, "body.data")
    return [(f["entity_type"], text[f["start"] : f["end"]]) for f in findings]


def test_luhn_and_cards() -> None:
    assert luhn_ok(b"4111111111111111")
    assert not luhn_ok(b"4111111111111112")
    assert card_ok(b"378282246310005")  # Amex
    assert card_ok(b"2221000000000009")  # Mastercard 2-series
    epoch_ms = next(
        str(t).encode() for t in range(1_709_647_351_000, 1_709_647_351_100) if luhn_ok(str(t).encode())
    )
    assert not card_ok(epoch_ms)  # an epoch-ms timestamp that passes Luhn lacks a card network prefix
    assert card_ok(b"1234567812345670", in_context=True)  # in a card column the prefix is not required
    assert not card_ok(b"411111111111")  # 12 digits


@pytest.mark.parametrize(
    ("digits", "ok"),
    [
        (b"123456789", True),
        (b"000123456", False),
        (b"666123456", False),
        (b"912345678", False),
        (b"123006789", False),
        (b"123450000", False),
        (b"899991234", True),
    ],
)
def test_ssn_ranges(digits: bytes, ok: bool) -> None:
    assert ssn_ok(digits) is ok


def test_npi_checksum_uses_80840_prefix() -> None:
    assert npi_ok(b"1234567893")
    assert not npi_ok(b"1234567890")
    assert not npi_ok(b"3234567893")  # must start with 1 or 2


def test_iban_mod97_and_length() -> None:
    assert iban_ok(b"DE89370400440532013000")
    assert iban_ok(b"GB82WEST12345698765432")
    assert not iban_ok(b"DE89370400440532013001")
    assert not iban_ok(b"DE8937040044053201300")  # one short for Germany


def test_ip_validation() -> None:
    assert ipv4_ok(b"192.168.10.254")
    assert not ipv4_ok(b"256.1.1.1")
    assert not ipv4_ok(b"01.2.3.4")
    assert ipv6_ok(b"2001:db8::8a2e:370:7334")
    assert not ipv6_ok(b"::1")
    assert not ipv6_ok(b"12:34:56")


@pytest.mark.parametrize(
    ("text", "entity", "value"),
    [
        (
            "mail ada.lovelace+audit@analytical-engine.co.uk now",
            "EMAIL_ADDRESS",
            "ada.lovelace+audit@analytical-engine.co.uk",
        ),
        ("call (415) 555-0132 today", "PHONE_NUMBER", "(415) 555-0132"),
        ("call 415-555-0132", "PHONE_NUMBER", "415-555-0132"),
        ("call 415.555.0132", "PHONE_NUMBER", "415.555.0132"),
        ("call +1 415 555 0132", "PHONE_NUMBER", "+1 415 555 0132"),
        ("call 1-800-555-0199", "PHONE_NUMBER", "1-800-555-0199"),
        ("ring +44 20 7946 0958", "PHONE_NUMBER", "+44 20 7946 0958"),
        ("ring +4915112345678", "PHONE_NUMBER", "+4915112345678"),
        ("card 4111 1111 1111 1111 ok", "CREDIT_CARD", "4111 1111 1111 1111"),
        ("card 4111-1111-1111-1111", "CREDIT_CARD", "4111-1111-1111-1111"),
        ("card 4111111111111111", "CREDIT_CARD", "4111111111111111"),
        ("amex 3782 822463 10005", "CREDIT_CARD", "3782 822463 10005"),
        ("ssn 123-45-6789", "US_SSN", "123-45-6789"),
        ("iban DE89 3704 0044 0532 0130 00", "IBAN_CODE", "DE89 3704 0044 0532 0130 00"),
        ("iban GB82WEST12345698765432.", "IBAN_CODE", "GB82WEST12345698765432"),
        ("from 10.12.0.7:5432", "IP_ADDRESS", "10.12.0.7"),
        ("from 2001:db8:85a3::8a2e:370:7334 port 22", "IP_ADDRESS", "2001:db8:85a3::8a2e:370:7334"),
        (
            "from 2001:0db8:85a3:0000:0000:8a2e:0370:7334",
            "IP_ADDRESS",
            "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
        ),
        ("NPI: 1234567893", "US_NPI", "1234567893"),
        ("provider 1234 567 893", "US_NPI", "1234 567 893"),
        ("key AKIAIOSFODNN7EXAMPLE", "AWS_ACCESS_KEY", "AKIAIOSFODNN7EXAMPLE"),
        (
            "token ghp_abcdefghijklmnopqrstuvwxyz0123456789",
            "GITHUB_TOKEN",
            "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
        ),
        (
            "t github_pat_11ABCDEFG0123456789abc_defghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOP",
            "GITHUB_TOKEN",
            "github_pat_11ABCDEFG0123456789abc_defghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOP",
        ),
        (
            "slack xoxb-12345678901-123456789012-abcdefghijklmnopqrstuvwx",
            "SLACK_TOKEN",
            "xoxb-12345678901-123456789012-abcdefghijklmnopqrstuvwx",
        ),
        ("stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc", "STRIPE_KEY", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
        ("stripe rk_live_4eC39HqLyjWDarjtT1zdp7dc", "STRIPE_KEY", "rk_live_4eC39HqLyjWDarjtT1zdp7dc"),
        ("url postgres://app:s3cr%21t@db.internal:5432/app", "PASSWORD", "s3cr%21t"),
        ("ALTER USER app WITH PASSWORD 'Tr0ub4dor&3';", "PASSWORD", "Tr0ub4dor&3"),
        ("CREATE USER 'x'@'%' IDENTIFIED BY 'hunter22';", "PASSWORD", "hunter22"),
    ],
)
def test_detects(engine: MaskingEngine, text: str, entity: str, value: str) -> None:
    assert (entity, value) in found(engine, text)


def test_jwt_and_pem(engine: MaskingEngine) -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
    assert ("JWT", jwt) in found(engine, f"Bearer {jwt}\n")
    pem = (
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\nQyNTUxOQAAACBx==\n"
        "-----END OPENSSH PRIVATE KEY-----\n"
    )
    masked, findings = engine.mask_text(pem, "body.data")
    assert [f["entity_type"] for f in findings] == ["PRIVATE_KEY"]
    assert masked.splitlines()[0] == "-----BEGIN OPENSSH PRIVATE KEY-----"
    assert masked.splitlines()[1] == "*" * len("b3BlbnNzaC1rZXktdjEAAAAA")
    assert masked.count("\n") == pem.count("\n")


def test_aws_secret_next_to_key_id(engine: MaskingEngine) -> None:
    text = "AKIAIOSFODNN7EXAMPLE,wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n"
    assert ("AWS_SECRET_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY") in found(engine, text)


@pytest.mark.parametrize(
    "text",
    [
        "request 3f2b8c1e-9d4a-4b2e-8f1a-2c3d4e5f6a7b done",
        "commit 9fceb02d0ae598e95dc970b74767f19372d61af8",
        "at 2024-03-05T14:22:31.123Z and 2024-03-05 14:22:31",
        "epoch 1709647351 ms 1709647351123",
        "order ORD-2024-000123 #100234567 PO-88213",
        "version v1.24.3 and 10.4.18 and 2.0.0-rc.1",
        "pod web-7d9f8b6c4-x2kzq Running",
        "ref 4111111111111112 and 4111 1111 1111 1112",
        "ssn 000-12-3456 666-12-3456 912-34-5678 123-00-4567 123-45-0000",
        "batch 1234567890 1987654321",
        "mac 00:1a:2b:3c:4d:5e time 12:34:56",
        "prompt ubuntu@ip-10-0-1-5.ec2.internal:~$ ",
        "std::vector<int> and Foo::Bar::baz",
        "resourceVersion: 123456789",
        "sizes 4096 8192 65536 1048576 and 3.14159",
    ],
)
def test_lookalikes_survive(engine: MaskingEngine, text: str) -> None:
    masked, findings = engine.mask_text(text, "body.data")
    assert findings == []
    assert masked == text


def test_normalisation_for_blind_index() -> None:
    assert normalise("EMAIL_ADDRESS", b"Ada@Example.COM") == b"ada@example.com"
    assert normalise("CREDIT_CARD", b"4111-1111 1111-1111") == b"4111111111111111"
    assert normalise("PHONE_NUMBER", b"(415) 555-0132") == normalise("PHONE_NUMBER", b"+1 415 555 0132")
    assert normalise("IBAN_CODE", b"de89 3704 0044 0532 0130 00") == b"DE89370400440532013000"
    assert normalise("DATE_OF_BIRTH", b"12/10/1815") == b"1815-12-10"
    assert normalise("DATE_OF_BIRTH", b"10 December 1815") == b"1815-12-10"
    assert normalise("PERSON", b"Ada  LOVELACE") == b"ada lovelace"
    assert normalise("IP_ADDRESS", b"2001:0db8:0000:0000:0000:0000:0000:0001") == b"2001:db8::1"
    assert blind_index(KEY, "US_SSN", b"123-45-6789") == blind_index(KEY, "US_SSN", b"123 45 6789")
    assert blind_index(KEY, "US_SSN", b"123-45-6789") != blind_index(b"x" * 32, "US_SSN", b"123-45-6789")
