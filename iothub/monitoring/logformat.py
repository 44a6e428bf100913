"""Log formatting: JSON lines (one object per record) or plain text, chosen by LOG_FORMAT.

JSON lines carry the record's `extra` fields (request_id, device_id, status, ...) as keys, so a
log collector can filter on them without parsing the message.
"""

from pythonjsonlogger.json import JsonFormatter


class HubJsonFormatter(JsonFormatter):
    """`{"time", "level", "logger", "message", ...extra}` on one line, times in ISO 8601 UTC."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("timestamp", "time")
        kwargs.setdefault("rename_fields", {"levelname": "level", "name": "logger"})
        super().__init__("%(levelname)s %(name)s %(message)s", *args, **kwargs)
