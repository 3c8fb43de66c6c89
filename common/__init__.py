"""The shared kernel: ids, correlation ids, logging, errors, backoff, pagination and admin
helpers that every app uses. It sits below the apps and imports none of them (import-linter
checks it), so importing it builds no Celery app and drags in no app's models."""
