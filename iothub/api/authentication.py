"""Device authentication: `Authorization: Bearer <device token>`, for the ingest endpoint only.

Users authenticate with `Token <key>` or a session; devices never get a user account.
"""

from dataclasses import dataclass

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from iothub.devices.models import Device
from iothub.ingest.selectors import sender_get_by_token
from iothub.rules.models import Rule


@dataclass(frozen=True)
class DevicePrincipal:
    """Stands in for `request.user` when a device authenticates; carries the device's enabled
    rules, read in the same query, for ingest to evaluate."""

    device: Device
    rules: list[Rule]
    is_authenticated: bool = True
    is_superuser: bool = False

    def __str__(self) -> str:
        return f"device {self.device.serial_number}"


class DeviceTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Send the header as: Authorization: Bearer <device token>.")
        try:
            token = header[1].decode()
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("The device token has invalid characters.") from None
        sender = sender_get_by_token(token=token)
        if sender is None:
            raise exceptions.AuthenticationFailed("Unknown or revoked device token.")
        return DevicePrincipal(sender.device, sender.rules), sender.device

    def authenticate_header(self, request) -> str:
        return f'{self.keyword} realm="devices"'


class DeviceTokenScheme(OpenApiAuthenticationExtension):
    """Describes the device token in the OpenAPI schema as HTTP bearer authentication."""

    target_class = DeviceTokenAuthentication
    name = "deviceToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A device's own credential: `Authorization: Bearer <token>`. Issued when the device "
            "is created and by `POST /api/v1/devices/{id}/rotate-token/`, shown once.",
        }
