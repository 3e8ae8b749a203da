# PostgreSQL for the compose stack's `postgres` profile where the postgres image cannot be pulled:
# Debian's postgresql-15 on the base bootstrapped from Debian's packages (scripts/debian-base.sh).
# Built by scripts/compose-images.sh; used through deploy/docker-compose.local.yml.
# The cluster is made at build time with the compose demo's values (user, password and database
# `scimrelay`, written in clear in docker-compose.yml: throwaway demo values), the way the public
# image makes it from POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB on its first start.
FROM local/debian:bookworm-slim
RUN printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \
 && apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d \
 && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
 && chown postgres:postgres /var/lib/postgresql/data /var/run/postgresql
USER postgres
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PGDATA=/var/lib/postgresql/data
RUN printf 'scimrelay-demo-not-a-secret\n' > /tmp/pw \
 && initdb --username=scimrelay --pwfile=/tmp/pw --auth-local=trust --auth-host=scram-sha-256 \
      --encoding=UTF8 --locale=C.UTF-8 >/dev/null \
 && rm /tmp/pw \
 && echo 'CREATE DATABASE scimrelay' | postgres --single -D "$PGDATA" postgres >/dev/null \
 && printf '%s\n' "listen_addresses = '*'" >> "$PGDATA/postgresql.conf" \
 && printf '%s\n' 'host all all 0.0.0.0/0 scram-sha-256' 'host all all ::/0 scram-sha-256' >> "$PGDATA/pg_hba.conf"
EXPOSE 5432
CMD ["postgres"]
