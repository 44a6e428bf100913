"""`notification_deliveries.next_attempt_at` (an additive extension, docs/schema.md): when a
delivery is due. Rows waiting for a retry get theirs from their last attempt and their template's
delay, so an upgrade neither sends them early nor forgets them."""

import iothub.db
from django.conf import settings
from django.db import migrations, models

SCHEDULE_PENDING_RETRIES = """
    UPDATE notification_deliveries d
    SET next_attempt_at = d.last_attempt_at + make_interval(secs => COALESCE(t.retry_delay_minutes, 5) * %s)
    FROM notification_templates t
    WHERE t.id = d.template_id AND d.status = 'pending' AND COALESCE(d.attempt_count, 0) > 0
      AND d.last_attempt_at IS NOT NULL
"""


def schedule_pending_retries(apps, schema_editor):
    schema_editor.execute(SCHEDULE_PENDING_RETRIES, [settings.IOTHUB_NOTIFICATION_RETRY_UNIT_SECONDS])


class Migration(migrations.Migration):

    dependencies = [
        ('events', '0002_lifecycle'),
        ('notifications', '0001_initial'),
    ]

    operations = [
        migrations.AddField(
            model_name='notificationdelivery',
            name='next_attempt_at',
            field=models.DateTimeField(db_default=iothub.db.Now()),
        ),
        migrations.AddIndex(
            model_name='notificationdelivery',
            index=models.Index(condition=models.Q(('status', 'pending')), fields=['next_attempt_at'], name='idx_notification_delivery_due'),
        ),
        migrations.RunPython(schedule_pending_retries, migrations.RunPython.noop),
    ]
