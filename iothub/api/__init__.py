"""The REST API face: serializers, views and routes over the domain apps' services and selectors."""
