"""The device simulator: realistic readings posted through the real HTTP ingest (`manage.py simulate`)."""
