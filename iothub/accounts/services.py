"""Writes to user accounts: the administrator login that a fresh installation starts with."""

import secrets
from dataclasses import dataclass

from django.contrib.auth.models import User
from django.db import transaction
from rest_framework.authtoken.models import Token


@dataclass(frozen=True)
class AdminLogin:
    user: User
    created: bool
    # The plaintext password when this call set it, to be shown once; None when it was left alone.
    password: str | None
    api_token: str


def admin_password_generate() -> str:
    return secrets.token_urlsafe(12)


@transaction.atomic
def admin_login_ensure(*, username: str, password: str | None = None, reset_password: bool = False) -> AdminLogin:
    """Make sure a superuser `username` exists and has an API token.

    A new superuser gets `password`, or a generated one. An existing user's password changes only
    when asked: `reset_password`, or a `password` that differs from the current one. Nothing else of
    an existing user is touched.
    """
    user = User.objects.filter(username=username).first()
    created = user is None
    new_password: str | None = None
    if user is None:
        new_password = password or admin_password_generate()
        user = User.objects.create_superuser(username=username, email=None, password=new_password)
    elif reset_password or (password and not user.check_password(password)):
        new_password = password or admin_password_generate()
        user.set_password(new_password)
        user.save(update_fields=["password"])
    token, _ = Token.objects.get_or_create(user=user)
    return AdminLogin(user=user, created=created, password=new_password, api_token=token.key)
