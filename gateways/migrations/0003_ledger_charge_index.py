"""The sandbox ledger's charge index on (gateway, gateway_reference, operation) instead of
gateway_reference alone, made and dropped CONCURRENTLY so that the ledger keeps taking writes
(issue 13: on a young table's statistics a charge's sums read every row of the account)."""

from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("gateways", "0002_sandboxrequest_outcome_not_sent")]

    operations = [
        AddIndexConcurrently(
            model_name="sandboxledgerentry",
            index=models.Index(
                fields=["gateway", "gateway_reference", "operation"], name="gw_ledger_charge_idx2"
            ),
        ),
        RemoveIndexConcurrently(model_name="sandboxledgerentry", name="gw_ledger_charge_idx"),
    ]
