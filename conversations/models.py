"""What the archiver keeps: one row per message, and the facts around them.

`conversation_history` is the table the operations guide queries by hand, so its column
names are part of the contract. Each message row is identified by
(conversation_id, message_key): the message id where LangChain gave one, else a digest of
what the message is. That unique key is what makes every write safe to repeat.
"""

from __future__ import annotations

from django.db import models


class ConversationHistory(models.Model):
    conversation_id = models.TextField()
    customer_id = models.TextField(null=True, blank=True)
    timestamp = models.DateTimeField(
        help_text="When the message entered the conversation: its own time, or that of the checkpoint where it first appeared."
    )
    role = models.CharField(max_length=32, help_text="human, ai, tool or system.")
    content = models.TextField(blank=True, help_text="The readable text of the message.")
    content_blocks = models.JSONField(
        null=True, blank=True, help_text="The original list of content blocks, when the content was one."
    )
    message_id = models.TextField(null=True, blank=True)
    position = models.IntegerField(help_text="0-based order within the conversation.")
    name = models.TextField(null=True, blank=True)
    tool_calls = models.JSONField(null=True, blank=True)
    tool_call_id = models.TextField(null=True, blank=True)
    metadata = models.JSONField(
        default=dict, blank=True, help_text="Every other field the message carried, unchanged."
    )
    message_key = models.TextField(help_text="Identity of the message within its conversation.")
    # Where the row came from.
    source = models.CharField(max_length=16, help_text="Checkpoint layout: redis, shallow or plain.")
    thread_id = models.TextField()
    checkpoint_ns = models.TextField(
        blank=True, help_text="The subgraph namespace of a message that only a subgraph had; empty for the conversation's own."
    )
    checkpoint_id = models.TextField(blank=True, help_text="The checkpoint where the message first appeared.")
    archived_at = models.DateTimeField()
    removed_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the bot removed the message from its state (trimmed, summarized, deleted); empty while the bot still has it.",
    )
    fingerprint = models.CharField(
        max_length=40, blank=True, default="", help_text="Digest of the stored fields; a new one means the bot edited the message."
    )

    class Meta:
        db_table = "conversation_history"
        verbose_name = "archived message"
        verbose_name_plural = "conversation history"
        ordering = ["conversation_id", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["conversation_id", "message_key"], name="conversation_history_message_once"
            ),
        ]
        indexes = [
            models.Index(fields=["customer_id", "timestamp"], name="conv_history_customer"),
            models.Index(fields=["conversation_id", "position"], name="conv_history_transcript"),
            models.Index(fields=["timestamp"], name="conv_history_timestamp"),
            # The role filter, newest first: without it a role with few rows (or none) walks
            # the whole timestamp index (docs/performance.md, *Admin search*: role = system).
            models.Index(fields=["role", "timestamp"], name="conv_history_role_time"),
        ]

    def __str__(self) -> str:
        return f"{self.conversation_id} #{self.position} ({self.role})"


class ArchivedConversation(models.Model):
    """Conversation-level facts, refreshed every time messages of the conversation are archived."""

    conversation_id = models.TextField(unique=True)
    customer_id = models.TextField(null=True, blank=True)
    thread_id = models.TextField()
    summary = models.TextField(null=True, blank=True)
    first_message_at = models.DateTimeField(null=True)
    last_message_at = models.DateTimeField(null=True)
    message_count = models.IntegerField(default=0)
    first_archived_at = models.DateTimeField()
    last_archived_at = models.DateTimeField()

    class Meta:
        db_table = "archived_conversation"
        indexes = [
            models.Index(fields=["customer_id"], name="archived_conv_customer"),
            models.Index(fields=["last_message_at"], name="archived_conv_last_message"),
        ]

    def __str__(self) -> str:
        return self.conversation_id


class QuarantinedCheckpoint(models.Model):
    """A Redis value the archiver could not read safely, kept byte for byte so the TTL cannot destroy it."""

    key = models.TextField()
    source = models.CharField(max_length=16)
    redis_type = models.CharField(max_length=32, blank=True)
    raw_value = models.BinaryField(help_text="The value as Redis returned it (DUMP format for non-strings).")
    value_sha1 = models.CharField(max_length=40)
    error = models.TextField()
    quarantined_at = models.DateTimeField()

    class Meta:
        db_table = "quarantined_checkpoint"
        constraints = [
            models.UniqueConstraint(fields=["key", "value_sha1"], name="quarantined_checkpoint_once"),
        ]
        indexes = [models.Index(fields=["quarantined_at"], name="quarantined_at")]

    def __str__(self) -> str:
        return self.key


class LiveThread(models.Model):
    """A conversation the live mirror copied while it is still in Redis: the version of its keys
    it copied (the newest checkpoint, and the pending writes where the layout counts them), so a
    run reads only the conversations that changed since. The row goes when the conversation is
    archived (its keys deleted), or once its keys have expired."""

    source = models.CharField(max_length=16)
    key = models.TextField(help_text="The Redis key the scan finds the conversation by.")
    conversation_id = models.TextField()
    version = models.TextField()
    since_position = models.IntegerField(
        help_text="The first position of this life of the thread: rows from here on that the bot no longer has are marked removed."
    )
    checkpoint_time = models.DateTimeField(
        null=True, blank=True, help_text="Its newest checkpoint's time when copied: the next read starts there."
    )
    mirrored_at = models.DateTimeField()
    expires_at = models.DateTimeField(null=True, blank=True, help_text="When its keys expire unless the bot writes again.")

    class Meta:
        db_table = "live_thread"
        constraints = [models.UniqueConstraint(fields=["source", "key"], name="live_thread_once")]
        indexes = [
            models.Index(fields=["conversation_id"], name="live_thread_conversation"),
            models.Index(fields=["expires_at"], name="live_thread_expires"),
        ]

    def __str__(self) -> str:
        return f"{self.conversation_id} (live, {self.source})"


class ArchiveRun(models.Model):
    class Status(models.TextChoices):
        RUNNING = "running"
        HEALTHY = "healthy"
        UNHEALTHY = "unhealthy"

    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    checkpoints_found = models.IntegerField(default=0)
    checkpoints_archived = models.IntegerField(default=0)
    messages_archived = models.IntegerField(default=0)
    deferred = models.IntegerField(default=0, help_text="Conversations written to during the run, kept for the next.")
    mirrored = models.IntegerField(default=0, help_text="Live conversations whose new messages the run copied.")
    mirrored_messages = models.IntegerField(default=0, help_text="Messages the live mirror added.")
    quarantined = models.IntegerField(default=0)
    errors = models.IntegerField(default=0)
    error_messages = models.TextField(blank=True)
    # What the run left in Redis (empty when it could not look at every key): the metrics'
    # "at risk" gauges are read from the newest run that could.
    waiting = models.IntegerField(null=True, blank=True, help_text="Conversations left in Redis.")
    at_risk = models.IntegerField(
        null=True, blank=True, help_text="Of those, the ones with messages the archive does not hold."
    )
    at_risk_expires_at = models.DateTimeField(
        null=True, blank=True, help_text="When the first of those expires from Redis unless the bot writes again."
    )
    next_expiry_at = models.DateTimeField(
        null=True, blank=True, help_text="When the first conversation left in Redis expires, archived or not."
    )

    class Meta:
        db_table = "archive_run"
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["started_at"], name="archive_run_started")]

    def __str__(self) -> str:
        return f"run {self.started_at:%Y-%m-%d %H:%M} ({self.status})"
