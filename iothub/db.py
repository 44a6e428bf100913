"""Database expressions the models share, for defaults exactly as the spec writes them."""

from django.db import models


class Now(models.Func):
    """`now()`, the spec's `DEFAULT NOW()`: the transaction's start time.

    Django's own `Now()` compiles to `statement_timestamp()` on PostgreSQL, a different default.
    """

    template = "now()"
    output_field = models.DateTimeField()


class NextVal(models.Func):
    """`nextval('<sequence>')`: what BIGSERIAL puts in the column's default."""

    function = "nextval"
    output_field = models.BigIntegerField()

    def __init__(self, sequence: str, **extra):
        super().__init__(models.Value(sequence), **extra)
