"""Read-only support views over the archive: search, transcripts, runs and quarantine.

Safety design: nothing here can write. Every admin refuses add, change and delete for
everyone, superusers included (changelist.ReadOnlyAdmin). Everything shown that came from a
conversation goes through Django's autoescaping (or format_html), never mark_safe, so a
message or a quarantined value containing HTML is shown as text.

Layout: history.py (messages, their search and the transcript link), transcript.py,
search.py, records.py (conversations, runs, quarantine), changelist.py (what every list
shares), display.py (how values are shown). Django imports this package to register them.
"""

from django.contrib import admin

from conversations.admin import history, records  # noqa: F401  (registers the ModelAdmins)

admin.site.site_header = "Conversation archive"
admin.site.site_title = "Conversation archive"
admin.site.index_title = "Support"
# There is no public site to go back to.
admin.site.site_url = None
