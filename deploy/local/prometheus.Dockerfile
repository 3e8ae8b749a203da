# Prometheus for the compose stack where prom/prometheus cannot be pulled: Debian's prometheus
# package (2.42) on the base bootstrapped from Debian's packages (scripts/debian-base.sh), plus
# wget for the same health check as the public image. Built by scripts/compose-images.sh; used
# through deploy/docker-compose.local.yml. Entrypoint, data directory and user as in the public
# image, so docker-compose.yml's `command:` serves both.
FROM local/debian:bookworm-slim
RUN printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \
 && apt-get update \
 && apt-get install -y --no-install-recommends prometheus wget \
 && rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d \
 && mkdir -p /prometheus && chown nobody:nogroup /prometheus
USER nobody
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
