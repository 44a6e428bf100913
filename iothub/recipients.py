"""Who a notification goes to: parsing and validating recipient entries, merging lists of them, and
which network addresses a webhook may reach.

A template's recipients are objects, one per kind:
`{"type": "email", "address": ...}`, `{"type": "sms", "phone": "+380501234567"}` (E.164),
`{"type": "webhook", "url": "https://..."}`, each with an optional `"name"`. A rule's
`notification` action may also list bare strings, which are email addresses.

Pure (no models, no database) and at the bottom of the package, because two layers validate
recipients with it: a rule's `notification` action when the rule is saved (rules), and a template's
recipients and the enqueue (notifications). One parser, so both accept the same entries.
"""

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator, URLValidator


class RecipientType:
    """The kinds of recipient, as `notification_deliveries.recipient_type` stores them."""

    EMAIL = "email"
    SMS = "sms"
    WEBHOOK = "webhook"


# The key that holds the address, per kind of recipient.
ADDRESS_KEY: dict[str, str] = {
    RecipientType.EMAIL: "address",
    RecipientType.SMS: "phone",
    RecipientType.WEBHOOK: "url",
}
MAX_RECIPIENTS = 50
MAX_NAME_LENGTH = 255  # notification_deliveries.recipient_name is VARCHAR(255)
MAX_EMAIL_LENGTH = 254  # RFC 5321's limit on a forward path
MAX_URL_LENGTH = 2000
# E.164: a plus, a country code that does not start with 0, at most 15 digits in all.
E164_RE = re.compile(r"^\+[1-9][0-9]{5,14}$")

_email_validator = EmailValidator()
_url_validator = URLValidator(schemes=["http", "https"])


@dataclass(frozen=True)
class Recipient:
    type: str
    address: str
    name: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        """What makes two recipients the same one: email addresses compare case-insensitively."""
        return (self.type, self.address.lower() if self.type == RecipientType.EMAIL else self.address)

    def as_json(self) -> dict:
        data = {"type": self.type, ADDRESS_KEY[self.type]: self.address}
        if self.name:
            data["name"] = self.name
        return data


class RecipientError(ValueError):
    """An invalid recipient entry; the message starts with its path, e.g. `[1].phone: ...`."""


# IPv6 ranges whose last 32 bits are an IPv4 address that the packet ends up at (or that a
# translator on the path reaches): IPv4-compatible (deprecated), IPv4-mapped, IPv4-translated
# (SIIT, RFC 7915), and the NAT64 prefixes, well-known (RFC 6052) and local-use (RFC 8215).
# Python counts most of them as global, so `[64:ff9b::a9fe:a9fe]` would reach 169.254.169.254.
_IPV4_IN_LAST_32_BITS = tuple(
    ipaddress.IPv6Network(network)
    for network in ("::/96", "::ffff:0:0/96", "::ffff:0:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48")
)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries, if it is of a form that carries one."""
    if ip.sixtofour is not None:  # 2002::/16
        return ip.sixtofour
    if ip.teredo is not None:  # 2001::/32: (server, client)
        return ip.teredo[1]
    if any(ip in network for network in _IPV4_IN_LAST_32_BITS):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def ip_is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether a webhook may connect to this address without IOTHUB_WEBHOOK_ALLOW_PRIVATE.

    Private, loopback, link-local (cloud metadata lives there), shared (CGNAT), reserved,
    unspecified and multicast addresses are not public, nor the deprecated IPv6 site-local range
    (fec0::/10, still routed inside some networks). An IPv4 address written inside an IPv6 one
    (mapped, compatible, translated, NAT64, 6to4, Teredo) is judged as that IPv4 address.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.is_site_local:
            return False
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            ip = embedded
    return ip.is_global and not ip.is_multicast


def url_private_host(url: str) -> str | None:
    """The host of `url` if it is visibly private without a DNS lookup (an IP literal that is not
    public, or localhost), else None. Names are checked again where the connection is made."""
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return host
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return None if ip_is_public(ip) else host


def recipient_parse(value: object, *, path: str, allow_bare_email: bool, allow_private: bool) -> Recipient:
    """One recipient entry, validated; raises RecipientError naming `path` and the bad key."""
    if isinstance(value, str):
        if not allow_bare_email:
            raise RecipientError(f'{path}: must be an object such as {{"type": "email", "address": "..."}}.')
        return Recipient(type=RecipientType.EMAIL, address=_email(value, path=path))
    if not isinstance(value, dict):
        raise RecipientError(f"{path}: must be an object with a type and an address.")
    kind = value.get("type")
    if not isinstance(kind, str) or kind not in ADDRESS_KEY:
        raise RecipientError(f"{path}.type: must be one of {', '.join(ADDRESS_KEY)}, not {kind!r}.")
    key = ADDRESS_KEY[kind]
    unknown = sorted(set(value) - {"type", key, "name"})
    if unknown:
        raise RecipientError(f"{path}: unknown key(s) {', '.join(unknown)} for a {kind} recipient.")
    if key not in value:
        raise RecipientError(f"{path}.{key}: required for a {kind} recipient.")
    raw = value[key]
    if not isinstance(raw, str):
        raise RecipientError(f"{path}.{key}: must be a string.")
    if kind == RecipientType.EMAIL:
        address = _email(raw, path=f"{path}.{key}")
    elif kind == RecipientType.SMS:
        address = _phone(raw, path=f"{path}.{key}")
    else:
        address = _webhook_url(raw, path=f"{path}.{key}", allow_private=allow_private)
    name = value.get("name")
    if name is not None:
        if not isinstance(name, str):
            raise RecipientError(f"{path}.name: must be a string.")
        name = name.strip()
        if len(name) > MAX_NAME_LENGTH:
            raise RecipientError(f"{path}.name: at most {MAX_NAME_LENGTH} characters.")
    return Recipient(type=kind, address=address, name=name or None)


def recipients_parse(
    values: object, *, allow_bare_email: bool = False, allow_private: bool = False, path: str = ""
) -> list[Recipient]:
    """A list of recipient entries, validated; duplicates are refused so a list reads as it sends."""
    if not isinstance(values, list):
        raise RecipientError(f"{path or 'recipients'}: must be a list.")
    if len(values) > MAX_RECIPIENTS:
        raise RecipientError(f"{path or 'recipients'}: at most {MAX_RECIPIENTS} recipients.")
    parsed: list[Recipient] = []
    seen: dict[tuple[str, str], int] = {}
    for index, value in enumerate(values):
        recipient = recipient_parse(
            value, path=f"{path}[{index}]", allow_bare_email=allow_bare_email, allow_private=allow_private
        )
        if recipient.key in seen:
            raise RecipientError(f"{path}[{index}]: the same recipient as {path}[{seen[recipient.key]}].")
        seen[recipient.key] = index
        parsed.append(recipient)
    return parsed


def recipients_merge(*lists: Iterable[Recipient]) -> list[Recipient]:
    """The recipients of all lists in order, each once: the first entry (and its name) wins."""
    merged: dict[tuple[str, str], Recipient] = {}
    for recipients in lists:
        for recipient in recipients:
            merged.setdefault(recipient.key, recipient)
    return list(merged.values())


def _email(value: str, *, path: str) -> str:
    value = value.strip()
    if len(value) > MAX_EMAIL_LENGTH:
        raise RecipientError(f"{path}: an email address has at most {MAX_EMAIL_LENGTH} characters.")
    try:
        _email_validator(value)
    except ValidationError:
        raise RecipientError(f"{path}: {value!r} is not a valid email address.") from None
    return value


def _phone(value: str, *, path: str) -> str:
    # Stored in E.164 proper; written as people do, with spaces, dashes, dots or parentheses.
    value = re.sub(r"[\s\-.()]", "", value)
    if not E164_RE.match(value):
        raise RecipientError(
            f"{path}: {value!r} is not an E.164 phone number (a + and 6 to 15 digits, e.g. +380501234567)."
        )
    return value


def _webhook_url(value: str, *, path: str, allow_private: bool) -> str:
    value = value.strip()
    if len(value) > MAX_URL_LENGTH:
        raise RecipientError(f"{path}: at most {MAX_URL_LENGTH} characters.")
    try:
        _url_validator(value)
    except ValidationError:
        raise RecipientError(f"{path}: {value!r} is not a valid http(s) URL.") from None
    if not allow_private and (host := url_private_host(value)):
        raise RecipientError(
            f"{path}: {host} is a private or loopback address; webhooks may reach it only when "
            "IOTHUB_WEBHOOK_ALLOW_PRIVATE=true."
        )
    return value
