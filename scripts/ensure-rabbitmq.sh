#!/usr/bin/env bash
# Makes sure a local RabbitMQ is running with the management plugin (the tests create a private
# vhost per test through its API). Starts an installed broker; installs it with apt on
# Debian/Ubuntu as root when missing; otherwise says exactly what to install.
set -euo pipefail

say() { printf 'rabbitmq: %s\n' "$*"; }

if ! command -v rabbitmq-server >/dev/null 2>&1 && [ ! -x /usr/sbin/rabbitmq-server ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    say "not installed; installing rabbitmq-server with apt-get"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
  else
    say "RabbitMQ is not installed. Install RabbitMQ 3.10+ and run this again:"
    say "Debian/Ubuntu: sudo apt-get install rabbitmq-server; macOS: brew install rabbitmq."
    say "The demo and the tests use the local broker (127.0.0.1:5672, management API on :15672, guest/guest)."
    exit 1
  fi
fi
export PATH="$PATH:/usr/sbin:/usr/lib/rabbitmq/bin"

if ! rabbitmqctl -q status >/dev/null 2>&1; then
  say "starting rabbitmq-server"
  rabbitmq-server -detached >/dev/null 2>&1 || true
  for _ in $(seq 1 45); do
    rabbitmqctl -q await_startup >/dev/null 2>&1 && break
    sleep 2
  done
  rabbitmqctl -q await_startup >/dev/null 2>&1 || { say "did not start; see /var/log/rabbitmq/"; exit 1; }
fi

if ! rabbitmq-plugins -q list -e 2>/dev/null | grep -q 'rabbitmq_management '; then
  say "enabling rabbitmq_management"
  rabbitmq-plugins -q enable rabbitmq_management >/dev/null
fi
for _ in $(seq 1 30); do
  if curl -sf -u guest:guest http://127.0.0.1:15672/api/overview >/dev/null 2>&1; then
    exit 0
  fi
  sleep 1
done
say "management API not answering on 127.0.0.1:15672"
exit 1
