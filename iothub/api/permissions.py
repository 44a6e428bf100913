"""The API's permission: roles from `iothub.accounts.roles`.

Anonymous requests are refused with 401 (the authentication classes name the scheme); an
authenticated user without a role gets 403, and so does a `viewer` that tries to write.
"""

from rest_framework import permissions

from iothub.accounts.roles import user_can_read, user_can_write


class RolePermission(permissions.BasePermission):
    message = "Your account has no role that allows this; ask an administrator for `viewer` or `operator`."

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        if request.method in permissions.SAFE_METHODS:
            return user_can_read(user)
        if not user_can_write(user):
            self.message = "The `viewer` role reads only; writing needs the `operator` role."
            return False
        return True
