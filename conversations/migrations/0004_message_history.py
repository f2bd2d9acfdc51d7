"""The archive keeps the whole conversation: when the bot removed a message from its state, and
a fingerprint that tells when it edited one. Both columns are added without a table rewrite
(PostgreSQL 11 and later store a constant default in the catalogue), so this is quick on a
table of millions of rows."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('conversations', '0003_support_group'),
    ]

    operations = [
        migrations.AddField(
            model_name='conversationhistory',
            name='fingerprint',
            field=models.CharField(blank=True, default='', help_text='Digest of the stored fields; a new one means the bot edited the message.', max_length=40),
        ),
        migrations.AddField(
            model_name='conversationhistory',
            name='removed_at',
            field=models.DateTimeField(blank=True, help_text='When the bot removed the message from its state (trimmed, summarized, deleted); empty while the bot still has it.', null=True),
        ),
        migrations.AlterField(
            model_name='conversationhistory',
            name='checkpoint_id',
            field=models.TextField(blank=True, help_text='The checkpoint where the message first appeared.'),
        ),
        migrations.AlterField(
            model_name='conversationhistory',
            name='checkpoint_ns',
            field=models.TextField(blank=True, help_text="The subgraph namespace of a message that only a subgraph had; empty for the conversation's own."),
        ),
        migrations.AlterField(
            model_name='conversationhistory',
            name='timestamp',
            field=models.DateTimeField(help_text='When the message entered the conversation: its own time, or that of the checkpoint where it first appeared.'),
        ),
    ]
