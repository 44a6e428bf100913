from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "iothub.accounts"
    label = "accounts"
    verbose_name = "Accounts and roles"
