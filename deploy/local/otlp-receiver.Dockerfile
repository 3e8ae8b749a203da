# The OTLP receiver of the local compose run, in Jaeger's place where jaegertracing/all-in-one
# cannot be pulled: rotel's OpenTelemetry collector (the rotel-agent binary of PyPI's `rotel` wheel,
# fetched by scripts/compose-images.sh) listening for OTLP on 4317 (gRPC) and 4318 (HTTP), writing
# every span it receives to its log (`docker logs`) and dropping it. Same wire protocol as Jaeger's
# OTLP receiver; no UI. Built by scripts/compose-images.sh; used through
# deploy/docker-compose.local.yml.
FROM local/debian:bookworm-slim
# rotel-agent links libpython (it can run Python processors).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpython3.11 \
 && rm -rf /var/lib/apt/lists/*
COPY rotel-agent /usr/local/bin/rotel-agent
USER 10001:10001
EXPOSE 4317 4318
ENTRYPOINT ["rotel-agent", "start", "--otlp-grpc-endpoint", "0.0.0.0:4317", "--otlp-http-endpoint", "0.0.0.0:4318", "--exporter", "blackhole", "--debug-log", "traces", "--debug-log-verbosity", "detailed"]
