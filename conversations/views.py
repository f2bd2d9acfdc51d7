"""The one view outside the admin: Prometheus metrics."""

from __future__ import annotations

import hmac
import logging

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_safe
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from conversations import conf
from conversations import metrics as archiver_metrics

logger = logging.getLogger(__name__)


@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    token = conf.metrics_token()
    if token:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            response = HttpResponse("A bearer token is required (ARCHIVER_METRICS_TOKEN).\n", status=401, content_type="text/plain")
            response["WWW-Authenticate"] = "Bearer"
            return response
    try:
        body = archiver_metrics.exposition()
    except DatabaseError as exc:
        logger.error("Cannot read the metrics from the database: %s", exc)
        return HttpResponse(f"The database cannot be read: {exc}\n", status=503, content_type="text/plain")
    return HttpResponse(body, content_type=CONTENT_TYPE_PLAIN_0_0_4)  # what every Prometheus 2.x reads
