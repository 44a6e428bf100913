"""Routes of the dashboard, at the root of the site; login and logout are Django's auth views
with the dashboard's own templates."""

from django.contrib.auth import views as auth_views
from django.urls import path

from iothub.dashboard import views

app_name = "dashboard"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("overview/stats/", views.overview_stats, name="overview-stats"),
    path("overview/events/", views.overview_events, name="overview-events"),
    path("devices/", views.device_list, name="devices"),
    path("devices/<uuid:device_id>/", views.device_detail, name="device"),
    path("events/", views.event_list, name="events"),
    path("events/<int:event_id>/", views.event_detail, name="event"),
    path("events/<int:event_id>/acknowledge/", views.event_acknowledge_view, name="event-acknowledge"),
    path("events/<int:event_id>/resolve/", views.event_resolve_view, name="event-resolve"),
    path("rules/", views.rule_list, name="rules"),
    path("rules/new/", views.rule_new, name="rule-new"),
    path("rules/<uuid:rule_id>/", views.rule_detail, name="rule"),
    path("rules/<uuid:rule_id>/enable/", views.rule_enable_view, name="rule-enable"),
    path("rules/<uuid:rule_id>/disable/", views.rule_disable_view, name="rule-disable"),
    path("templates/", views.template_list, name="templates"),
    path("templates/new/", views.template_new, name="template-new"),
    path("templates/<int:template_id>/", views.template_detail, name="template"),
    path("templates/<int:template_id>/activate/", views.template_activate_view, name="template-activate"),
    path("templates/<int:template_id>/deactivate/", views.template_deactivate_view, name="template-deactivate"),
    path(
        "login/",
        auth_views.LoginView.as_view(template_name="dashboard/login.html", redirect_authenticated_user=True),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
]
