# The central services' image: registry, approvals, aggregator and ingress (compose.yaml picks one
# with `medperf serve <service>`). Built from this checkout; nothing else is fetched but PyPI wheels.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared shared
COPY services services
COPY cli cli
COPY examples examples
RUN pip install --no-cache-dir .
USER 65534
ENV MEDPERF_STATE_DIR=/tmp/medperf
CMD ["medperf", "serve"]
