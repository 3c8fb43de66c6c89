"""``Payment.progressed_at``: when the system last moved the payment on. Existing payments get
their ``updated_at``, which until now only the system's events set."""

import django.db.models.functions.datetime
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("payments", "0008_api_key_rate_limits"),
    ]

    operations = [
        migrations.AddField(
            model_name="payment",
            name="progressed_at",
            field=models.DateTimeField(
                db_default=django.db.models.functions.datetime.Now(),
                default=django.utils.timezone.now,
            ),
        ),
        migrations.RunSQL(
            "UPDATE payments_payment SET progressed_at = updated_at",
            reverse_sql=migrations.RunSQL.noop,
        ),
    ]
