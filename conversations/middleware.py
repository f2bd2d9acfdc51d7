"""Requests the support view refuses before any code reads them."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest


class RejectNulBytes:
    """A NUL byte in the path or a parameter (`?role=%00`, `/transcript/%00/`) is a 400.
    PostgreSQL cannot take one in a text value: passed on, it would be a server error."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        values = [request.path]
        for params in (request.GET, request.POST) if request.method == "POST" else (request.GET,):
            for key, items in params.lists():
                values += [key, *items]
        if any("\x00" in value for value in values):
            return HttpResponseBadRequest("NUL bytes are not allowed in a request.\n", content_type="text/plain")
        return self.get_response(request)
