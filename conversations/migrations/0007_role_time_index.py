"""An index for the support view's role filter, newest first.

Built CONCURRENTLY on PostgreSQL (hence atomic = False), so adding it to a table that already
holds millions of rows does not block the archiver's writes; an ordinary CREATE INDEX
elsewhere (SQLite).
"""

from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import ProjectState

INDEX = "conv_history_role_time"


class AddIndexWithoutBlocking(migrations.RunSQL):
    def __init__(self) -> None:
        super().__init__(
            sql=f'CREATE INDEX IF NOT EXISTS {INDEX} ON conversation_history (role, "timestamp")',
            reverse_sql=f"DROP INDEX IF EXISTS {INDEX}",
        )

    def database_forwards(
        self, app_label: str, schema_editor: BaseDatabaseSchemaEditor, from_state: ProjectState, to_state: ProjectState
    ) -> None:
        if schema_editor.connection.vendor == "postgresql":
            # A build interrupted half-way leaves an INVALID index behind: drop it first.
            schema_editor.execute(
                f"DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_index WHERE indexrelid = to_regclass('{INDEX}') "
                f"AND NOT indisvalid) THEN DROP INDEX {INDEX}; END IF; END $$"
            )
            schema_editor.execute(
                f'CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} ON conversation_history (role, "timestamp")'
            )
            return
        super().database_forwards(app_label, schema_editor, from_state, to_state)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("conversations", "0006_run_left_in_redis"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AddIndex(
                    model_name="conversationhistory",
                    index=models.Index(fields=["role", "timestamp"], name=INDEX),
                ),
            ],
            database_operations=[AddIndexWithoutBlocking()],
        ),
    ]
