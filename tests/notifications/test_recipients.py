"""Recipient entries: parsing, validation naming the key, merging, and which addresses are public."""

import ipaddress

import pytest

from iothub.recipients import (
    MAX_RECIPIENTS,
    Recipient,
    RecipientError,
    ip_is_public,
    recipients_merge,
    recipients_parse,
)


def test_parses_the_specs_example():
    parsed = recipients_parse(
        [
            {"type": "email", "address": "admin@company.com"},
            {"type": "sms", "phone": "+380501234567", "name": "Shift lead"},
            {"type": "webhook", "url": "https://hooks.slack.com/services/XXX/YYY/ZZZ"},
        ]
    )
    assert parsed == [
        Recipient("email", "admin@company.com"),
        Recipient("sms", "+380501234567", "Shift lead"),
        Recipient("webhook", "https://hooks.slack.com/services/XXX/YYY/ZZZ"),
    ]


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ({"type": "fax", "number": "1"}, r"\[0\].type: must be one of email, sms, webhook"),
        # JSON that is not a string where a kind is expected (found by the schemathesis run: a 500).
        ({"type": {}, "url": "https://example.com"}, r"\[0\].type: must be one of email, sms, webhook"),
        ({"type": ["email"], "address": "a@b.co"}, r"\[0\].type: must be one of email, sms, webhook"),
        ({"type": "email", "address": "a@b.co", "cc": "x"}, r"\[0\]: unknown key\(s\) cc"),
        ({"type": "email", "phone": "+380501234567"}, r"\[0\]: unknown key\(s\) phone"),
        ({"type": "email"}, r"\[0\].address: required"),
        ({"type": "email", "address": "not-an-address"}, r"\[0\].address: 'not-an-address' is not a valid email"),
        ({"type": "email", "address": 5}, r"\[0\].address: must be a string"),
        ({"type": "sms", "phone": "0501234567"}, r"\[0\].phone: .* not an E.164"),
        ({"type": "sms", "phone": "+0501234567"}, r"\[0\].phone: .* not an E.164"),
        ({"type": "sms", "phone": "+3805012345678901"}, r"\[0\].phone: .* not an E.164"),
        ({"type": "webhook", "url": "ftp://example.com/x"}, r"\[0\].url: .* not a valid http\(s\) URL"),
        ({"type": "webhook", "url": "http://10.0.0.5/hook"}, r"\[0\].url: 10.0.0.5 is a private"),
        ({"type": "webhook", "url": "http://169.254.169.254/latest"}, r"\[0\].url: 169.254.169.254 is a private"),
        ({"type": "webhook", "url": "http://[::1]:8080/"}, r"\[0\].url: ::1 is a private"),
        ({"type": "webhook", "url": "http://localhost/"}, r"\[0\].url: localhost is a private"),
        ({"type": "email", "address": "a@b.co", "name": 7}, r"\[0\].name: must be a string"),
        ({"type": "email", "address": "a@b.co", "name": "n" * 256}, r"\[0\].name: at most 255"),
        ("admin@company.com", r"\[0\]: must be an object"),
        (["email"], r"\[0\]: must be an object"),
    ],
)
def test_invalid_entries_are_rejected_naming_the_key(entry, says):
    with pytest.raises(RecipientError, match=says):
        recipients_parse([entry])


def test_private_webhook_addresses_are_accepted_when_allowed():
    parsed = recipients_parse([{"type": "webhook", "url": "http://127.0.0.1:8300/hook"}], allow_private=True)
    assert parsed[0].address == "http://127.0.0.1:8300/hook"


def test_bare_strings_are_email_addresses_where_allowed():
    assert recipients_parse(["ops@plant.example"], allow_bare_email=True) == [Recipient("email", "ops@plant.example")]
    with pytest.raises(RecipientError, match=r"\[0\]: 'nope' is not a valid email"):
        recipients_parse(["nope"], allow_bare_email=True)


def test_duplicates_within_a_list_are_rejected():
    with pytest.raises(RecipientError, match=r"\[1\]: the same recipient as \[0\]"):
        recipients_parse([{"type": "email", "address": "A@b.co"}, {"type": "email", "address": "a@b.co"}])


def test_a_list_is_required_and_bounded():
    with pytest.raises(RecipientError, match="must be a list"):
        recipients_parse({"type": "email", "address": "a@b.co"})
    with pytest.raises(RecipientError, match=f"at most {MAX_RECIPIENTS}"):
        recipients_parse([f"user{n}@b.co" for n in range(MAX_RECIPIENTS + 1)], allow_bare_email=True)


def test_merge_keeps_the_first_of_each_recipient_and_its_order():
    template = [Recipient("email", "Ops@Plant.example", "Ops"), Recipient("sms", "+380501234567")]
    action = [Recipient("email", "ops@plant.example"), Recipient("email", "boss@plant.example")]
    assert recipients_merge(template, action) == [
        Recipient("email", "Ops@Plant.example", "Ops"),
        Recipient("sms", "+380501234567"),
        Recipient("email", "boss@plant.example"),
    ]


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),  # noqa: S104 - an address under test, not a bind
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        # A private IPv4 address inside an IPv6 one, in every form that carries one:
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 (RFC 6052) of 169.254.169.254, the cloud metadata
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
        ("64:ff9b:1::a00:1", False),  # local-use NAT64 (RFC 8215)
        ("::7f00:1", False),  # IPv4-compatible ::127.0.0.1 (deprecated)
        ("::ffff:0:7f00:1", False),  # IPv4-translated (SIIT) 127.0.0.1
        ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo
        ("fec0::1", False),  # site-local (deprecated, RFC 3879), still routed inside some networks
        # ... and a public IPv4 address inside one is as public as the address itself.
        ("64:ff9b::808:808", True),
        ("::ffff:8.8.8.8", True),
    ],
)
def test_which_addresses_are_public(address, public):
    assert ip_is_public(ipaddress.ip_address(address)) is public


@pytest.mark.parametrize(
    "host", ["[64:ff9b::a9fe:a9fe]", "[::7f00:1]", "[::ffff:0:7f00:1]", "[64:ff9b::a00:1]", "[fec0::1]"]
)
def test_webhook_urls_with_a_private_ipv4_inside_ipv6_are_refused_when_saved(host):
    with pytest.raises(RecipientError, match=r"\[0\].url: .* is a private or loopback address"):
        recipients_parse([{"type": "webhook", "url": f"http://{host}:8080/hook"}])
