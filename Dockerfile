# registry-mirror: multi-stage, slim, non-root.
FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# gcc builds the C image encoder (mirror/_image_wire.c); the runtime stage needs no compiler.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml setup.py README.md ./
COPY mirror ./mirror
RUN pip install --no-cache-dir . && cd / && python -c "import mirror._image_wire"

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 mirror
COPY --from=build /opt/venv /opt/venv
# Migrations are read from /app/sql (see mirror/store/migrate.py: MIRROR_SQL_DIR).
COPY sql /app/sql
ENV PATH=/opt/venv/bin:$PATH \
    MIRROR_SQL_DIR=/app/sql \
    MIRROR_DATA_DIR=/home/mirror/data \
    PYTHONUNBUFFERED=1
USER mirror
WORKDIR /home/mirror
EXPOSE 8080 50051
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"
ENTRYPOINT ["mirror"]
CMD ["run", "--host", "0.0.0.0"]
