# AegisPay application image: the web server, the Celery worker and Celery beat all run from it
# (see docker-compose.yml). .dockerignore keeps local state (.venv, .aegispay, .git) out.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 aegispay
WORKDIR /app

COPY . .
# The runtime dependencies only: not the `embedded` extra (the development launcher's PostgreSQL,
# Redis and psutil), nor `dev`.
RUN pip install .

USER aegispay
EXPOSE 8000
CMD ["python", "manage.py", "runserver", "0.0.0.0:8000", "--noreload"]
