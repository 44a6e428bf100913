"""Settings for the test suite: the hub's own, with a fixed key and fast password hashing."""

import os

os.environ.setdefault("SECRET_KEY", "tests-only-key-not-a-secret")

from iothub.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
