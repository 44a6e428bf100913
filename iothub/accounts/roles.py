"""The hub's two roles, as Django groups, and the checks every face uses."""

VIEWER_GROUP = "viewer"
OPERATOR_GROUP = "operator"
ROLE_GROUPS = (VIEWER_GROUP, OPERATOR_GROUP)


def user_roles(user) -> frozenset[str]:
    """The roles a user holds, remembered on the user object for the rest of the request."""
    if not user or not user.is_authenticated:
        return frozenset()
    cached = getattr(user, "_iothub_roles", None)
    if cached is None:
        cached = frozenset(user.groups.filter(name__in=ROLE_GROUPS).values_list("name", flat=True))
        user._iothub_roles = cached
    return cached


def user_can_read(user) -> bool:
    return bool(user and user.is_authenticated and (user.is_superuser or user_roles(user)))


def user_can_write(user) -> bool:
    return bool(user and user.is_authenticated and (user.is_superuser or OPERATOR_GROUP in user_roles(user)))
