"""The payments tests share the fixtures of tests/conftest.py (merchants, Celery workers)."""
