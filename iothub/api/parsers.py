"""The API's one request encoding: JSON, within bounds that keep a hostile body a 400.

DRF's JSON parser, plus two refusals: nesting deeper than Python's parser goes (it raises
RecursionError, which DRF lets through as a 500), and nesting deeper than MAX_DEPTH, which parses
but would reach validators, error messages and the database adapter that recurse through it too.
No request body of the API comes near: a rule's `action_config` is four levels deep. Integers of more
than 4,300 digits Python refuses to convert; DRF already answers those with a 400.

Form and multipart encodings are not parsed at all (the settings list this parser only), so the
OpenAPI schema advertises JSON alone and any other body is a 415.
"""

from rest_framework import parsers
from rest_framework.exceptions import ParseError

MAX_DEPTH = 32


def json_depth_exceeds(data: object, limit: int) -> bool:
    """Whether lists and objects nest more than `limit` levels deep; iterative, so that the check
    cannot itself run out of stack."""
    stack = [(data, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if level > limit:
            return True
        stack.extend((child, level + 1) for child in children)
    return False


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply") from None
        if json_depth_exceeds(data, MAX_DEPTH):
            raise ParseError(f"JSON parse error - nested more than {MAX_DEPTH} levels deep")
        return data
