# RabbitMQ for the compose stack where rabbitmq:3.13-management cannot be pulled: Debian's
# rabbitmq-server (3.10, the version `make test` runs against) with the management plugin, on the
# base bootstrapped from Debian's packages (scripts/debian-base.sh). Built by
# scripts/compose-images.sh; used through deploy/docker-compose.local.yml. Same ports, same
# guest/guest demo credentials and the same health check command as the public image.
FROM local/debian:bookworm-slim
# policy-rc.d keeps the package's maintainer scripts from starting a broker during the build.
RUN printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \
 && apt-get update \
 && apt-get install -y --no-install-recommends rabbitmq-server \
 && rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d \
 && rabbitmq-plugins enable --offline rabbitmq_management \
 && printf '%s\n' 'loopback_users = none' 'listeners.tcp.default = 5672' 'management.tcp.port = 15672' \
      > /etc/rabbitmq/rabbitmq.conf \
 && rm -f /etc/rabbitmq/rabbitmq-env.conf
# The real scripts, not /usr/sbin's wrappers (they switch user with su, which needs root).
ENV PATH=/usr/lib/rabbitmq/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    RABBITMQ_LOGS=- \
    HOME=/var/lib/rabbitmq
USER rabbitmq
EXPOSE 5672 15672
CMD ["rabbitmq-server"]
