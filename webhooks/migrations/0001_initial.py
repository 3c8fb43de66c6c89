"""The webhook models, moved here from outbox with their tables (``db_table``, index and
constraint names as outbox/migrations/0003_webhooks.py made them).

State only: outbox/migrations/0005_webhooks_move_out.py removed them from outbox's state, and
the tables already exist, so no SQL runs here, in either direction.
"""

import django.db.models.deletion
import webhooks.models
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('outbox', '0005_webhooks_move_out'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='WebhookEndpoint',
                    fields=[
                        ('id', models.CharField(default=webhooks.models.new_webhook_endpoint_id, max_length=40, primary_key=True, serialize=False)),
                        ('merchant_id', models.CharField(max_length=40)),
                        ('url', models.CharField(max_length=2048)),
                        ('events', models.JSONField(default=list)),
                        ('secret', models.CharField(max_length=100)),
                        ('status', models.CharField(choices=[('enabled', 'Enabled'), ('disabled', 'Disabled')], default='enabled', max_length=16)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('disabled_at', models.DateTimeField(blank=True, null=True)),
                    ],
                    options={
                        'db_table': 'outbox_webhookendpoint',
                        'ordering': ('-id',),
                        'indexes': [models.Index(fields=['merchant_id', 'id'], name='webhook_endpoint_merchant_idx')],
                    },
                ),
                migrations.CreateModel(
                    name='WebhookDelivery',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('event_id', models.CharField(max_length=40)),
                        ('event_type', models.CharField(max_length=64)),
                        ('aggregate_id', models.CharField(max_length=40)),
                        ('payload', models.JSONField()),
                        ('status', models.CharField(choices=[('pending', 'Pending'), ('succeeded', 'Succeeded'), ('failed', 'Failed')], default='pending', max_length=16)),
                        ('attempts', models.PositiveIntegerField(default=0)),
                        ('next_attempt_at', models.DateTimeField(blank=True, null=True)),
                        ('leased_until', models.DateTimeField(blank=True, null=True)),
                        ('lease_token', models.CharField(blank=True, default='', max_length=32)),
                        ('last_status_code', models.PositiveSmallIntegerField(blank=True, null=True)),
                        ('last_error', models.TextField(blank=True, default='')),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('delivered_at', models.DateTimeField(blank=True, null=True)),
                        ('endpoint', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='deliveries', to='webhooks.webhookendpoint')),
                    ],
                    options={
                        'verbose_name_plural': 'webhook deliveries',
                        'db_table': 'outbox_webhookdelivery',
                        'ordering': ('-id',),
                    },
                ),
                migrations.CreateModel(
                    name='WebhookAttempt',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('attempted_at', models.DateTimeField()),
                        ('status_code', models.PositiveSmallIntegerField(blank=True, null=True)),
                        ('latency_ms', models.PositiveIntegerField()),
                        ('error', models.TextField(blank=True, default='')),
                        ('response_excerpt', models.TextField(blank=True, default='')),
                        ('delivery', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='attempt_rows', to='webhooks.webhookdelivery')),
                    ],
                    options={
                        'db_table': 'outbox_webhookattempt',
                        'ordering': ('-attempted_at', '-id'),
                        'indexes': [models.Index(fields=['delivery', 'attempted_at'], name='webhook_attempt_idx')],
                    },
                ),
                migrations.AddIndex(
                    model_name='webhookdelivery',
                    index=models.Index(condition=models.Q(('status', 'pending')), fields=['next_attempt_at'], name='webhook_delivery_due_idx'),
                ),
                migrations.AddIndex(
                    model_name='webhookdelivery',
                    index=models.Index(fields=['event_id'], name='webhook_delivery_event_idx'),
                ),
                migrations.AddConstraint(
                    model_name='webhookdelivery',
                    constraint=models.UniqueConstraint(fields=('endpoint', 'event_id'), name='webhook_delivery_endpoint_event_uniq'),
                ),
            ],
            database_operations=[],
        ),
    ]
