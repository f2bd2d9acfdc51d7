"""Full-text search over message content for the support view: a GIN index on
to_tsvector('simple', content), the exact expression conversations.admin.search.ContentWords
writes, so the planner uses it.

Built CONCURRENTLY (hence atomic = False) so that adding it to a table that already holds
millions of rows does not block the archiver's writes. PostgreSQL only: the SQLite default
searches with icontains and needs nothing. The index is not declared on the model (Django
cannot express it without the COALESCE that SearchVector adds), so makemigrations stays clean.
"""

from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import ProjectState

INDEX = "conv_history_content_fts"


class RunSQLOnPostgres(migrations.RunSQL):
    """RunSQL that does nothing on other databases."""

    def database_forwards(
        self, app_label: str, schema_editor: BaseDatabaseSchemaEditor, from_state: ProjectState, to_state: ProjectState
    ) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(
        self, app_label: str, schema_editor: BaseDatabaseSchemaEditor, from_state: ProjectState, to_state: ProjectState
    ) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("conversations", "0001_initial"),
    ]

    operations = [
        RunSQLOnPostgres(
            # A build interrupted half-way leaves an INVALID index behind: drop it first.
            sql=[
                f"""DO $$ BEGIN
                      IF EXISTS (SELECT 1 FROM pg_index WHERE indexrelid = to_regclass('{INDEX}') AND NOT indisvalid)
                      THEN DROP INDEX {INDEX}; END IF;
                    END $$""",
                f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} ON conversation_history "
                "USING gin (to_tsvector('simple'::regconfig, content))",
            ],
            reverse_sql=f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}",
        ),
    ]
