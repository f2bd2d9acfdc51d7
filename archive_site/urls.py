from django.contrib import admin
from django.urls import path

from conversations import views

urlpatterns = [
    path("admin/", admin.site.urls),
    # Prometheus scrapes this without a login (a bearer token when ARCHIVER_METRICS_TOKEN is set).
    path("metrics", views.metrics, name="metrics"),
]
