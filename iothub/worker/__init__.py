"""The worker flow: the hub's one background process, `manage.py run_worker` (see `loop.py`)."""
