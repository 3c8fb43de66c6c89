# AegisPay application image: the web tier (gunicorn), the Celery worker, the outbox relay's
# worker, beat and the one-shot migration all run from it (docker-compose.yml, deploy/).
# Runtime dependencies only, exactly as requirements.lock pins them (with hashes): no
# embedded servers, no dev tools. .dockerignore keeps local state (.venv, .aegispay, .git) out.

# --- build: wheels of the pinned dependencies and of the project ---
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements.lock ./
RUN pip wheel --no-deps --require-hashes -r requirements.lock -w /wheels
COPY . .
RUN pip wheel --no-deps . -w /wheels

# --- runtime ---
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=aegispay.settings \
    STATIC_ROOT=/app/staticfiles \
    PORT=8000
RUN useradd --create-home --uid 10001 aegispay
COPY --from=build /wheels /wheels
RUN pip install --no-index --no-deps /wheels/*.whl && rm -rf /wheels
WORKDIR /app
COPY manage.py ./
# The static files, collected once at build time (settings need values to load; nothing
# connects): WhiteNoise serves them with DEBUG off.
RUN DEBUG=true DATABASE_URL=postgres://build@localhost/none REDIS_URL=redis://localhost/0 \
    python manage.py collectstatic --noinput --verbosity 0
USER aegispay
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('PORT', '8000')}/health/live\", timeout=2)"]
# The web tier. Other processes override the command (docker-compose.yml, deploy/):
#   celery -A aegispay worker ...   |   celery -A aegispay beat ...   |   python manage.py migrate
CMD ["gunicorn", "-c", "python:aegispay.gunicorn", "aegispay.wsgi"]
