"""The `support` group: view-only permissions on the archive's four models, so giving a
person access is one step (is_staff + this group). Permissions are normally created after
all migrations ran; create_permissions makes them exist now, on a fresh database too."""

from django.apps import apps as global_apps
from django.contrib.auth.management import create_permissions
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps

GROUP = "support"
MODELS = ("conversationhistory", "archivedconversation", "archiverun", "quarantinedcheckpoint")


def create_support_group(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    # The installed app config only gets past create_permissions' "has models" check; the
    # content types and permissions themselves come from this migration's state (`apps`).
    create_permissions(
        global_apps.get_app_config("conversations"), apps=apps, verbosity=0, using=schema_editor.connection.alias
    )
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.using(schema_editor.connection.alias).get_or_create(name=GROUP)
    views = Permission.objects.using(schema_editor.connection.alias).filter(
        content_type__app_label="conversations", codename__in=[f"view_{model}" for model in MODELS]
    )
    group.permissions.add(*views)


def remove_support_group(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    Group = apps.get_model("auth", "Group")
    Group.objects.using(schema_editor.connection.alias).filter(name=GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0002_content_search_index"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.RunPython(create_support_group, remove_support_group),
    ]
