"""Writes to events: raising them, recording what their actions did, their lifecycle."""

import json

from django.db import connection


def event_action_result_update(*, event_id: int, index: int, changes: dict) -> None:
    """Merge `changes` into entry `index` of the event's `execution_results`.

    One statement under the row lock, so workers finishing different actions of the same event
    at the same moment cannot overwrite each other's entries.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE events
            SET execution_results = jsonb_set(
                execution_results, ARRAY[%(index)s::text], (execution_results -> %(index)s) || %(changes)s::jsonb
            )
            WHERE id = %(event_id)s AND jsonb_array_length(execution_results) > %(index)s
            """,
            {"event_id": event_id, "index": index, "changes": json.dumps(changes, default=str)},
        )
        if cursor.rowcount != 1:
            raise LookupError(f"event {event_id} has no action at index {index}")
