#!/usr/bin/env bash
# Makes sure the brokers turnout's integration tests talk to are installed and running on
# 127.0.0.1: mosquitto (1883), NATS with JetStream (4222) and RabbitMQ (5672) with its AMQP 1.0
# plugin. Idempotent: a broker that is already up is left alone. Needs root for installs.
# Also installs promtool (Debian's prometheus package), which the observability test runs on the
# alert rules and on a real /metrics scrape, without leaving the package's Prometheus server
# running: it would take 127.0.0.1:9090, turnout's default admin address.
set -euo pipefail

log() { echo "brokers: $*"; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { # port seconds
  for _ in $(seq 1 "$2"); do port_open "$1" && return 0; sleep 1; done
  return 1
}
need_pkg() { # binary package
  command -v "$1" >/dev/null 2>&1 && return 0
  log "installing $2"
  if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

# Installing packages and starting system brokers needs root. Without it, say what is missing and
# go on: the tests skip what they cannot reach (and fail under CI, which runs as root).
if [ "$(id -u)" -ne 0 ]; then
  for p in 1883:mosquitto 4222:nats 5672:rabbitmq; do
    port_open "${p%%:*}" || log "${p#*:} is not running on 127.0.0.1:${p%%:*}; run this script as root to install and start it"
  done
  command -v promtool >/dev/null 2>&1 || log "promtool is missing; run this script as root to install it (Debian package prometheus)"
  exit 0
fi

# promtool, from the prometheus package, whose postinst enables and (where services may start)
# starts a Prometheus server on port 9090: a policy-rc.d forbids the start during the install, and
# the service is disabled after it, so that only the tool is left.
if ! command -v promtool >/dev/null 2>&1; then
  log "installing prometheus (for promtool)"
  if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq; APT_UPDATED=1; fi
  policy_added=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    policy_added=1
  fi
  rc=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null || rc=$?
  if [ -n "$policy_added" ]; then rm -f /usr/sbin/policy-rc.d; fi
  [ "$rc" -eq 0 ] || { log "installing prometheus failed"; exit "$rc"; }
  if [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  else
    deb-systemd-helper disable prometheus.service >/dev/null 2>&1 || true
  fi
  update-rc.d prometheus disable >/dev/null 2>&1 || true
fi
log "promtool: $(promtool --version 2>&1 | head -n 1)"

# mosquitto: the tests start private instances of this binary too.
need_pkg mosquitto mosquitto
need_pkg mosquitto_pub mosquitto-clients
if ! port_open 1883; then
  log "starting mosquitto"
  install -d -m 740 -o mosquitto /run/mosquitto 2>/dev/null || install -d -m 740 /run/mosquitto
  mosquitto -d -c /etc/mosquitto/mosquitto.conf
  wait_port 1883 20 || { log "mosquitto did not come up on 1883"; exit 1; }
fi
log "mosquitto up on 127.0.0.1:1883"

# NATS with JetStream.
need_pkg nats-server nats-server
if ! port_open 4222; then
  log "starting nats-server"
  mkdir -p /var/lib/nats-server
  start-stop-daemon --start --oknodo --background --exec "$(command -v nats-server)" -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  wait_port 4222 20 || { log "nats-server did not come up on 4222"; exit 1; }
fi
log "nats up on 127.0.0.1:4222"

# RabbitMQ with the AMQP 1.0 plugin.
need_pkg rabbitmq-server rabbitmq-server
rabbit_ready() { # waits until the node answers and its applications run
  for _ in $(seq 1 45); do
    rabbitmqctl await_startup --timeout 10 >/dev/null 2>&1 && return 0
    sleep 2
  done
  log "rabbitmq node did not start"; return 1
}
if ! port_open 5672; then
  log "starting rabbitmq"
  rabbitmq-plugins enable --offline rabbitmq_amqp1_0 >/dev/null
  rabbitmq-server -detached
  rabbit_ready
else
  rabbit_ready
  if ! rabbitmq-plugins list -e -m 2>/dev/null | grep -qx rabbitmq_amqp1_0; then
    log "enabling rabbitmq_amqp1_0"
    rabbitmq-plugins enable rabbitmq_amqp1_0 >/dev/null
  fi
fi
# The plugin answers the AMQP 1.0 SASL header in kind; without it RabbitMQ answers AMQP 0-9-1.
amqp10_ok() {
  local hdr
  exec 3<>/dev/tcp/127.0.0.1/5672 2>/dev/null || return 1
  printf 'AMQP\x03\x01\x00\x00' >&3
  hdr=$(timeout 3 head -c 8 <&3 | od -An -tx1 | tr -d ' \n')
  exec 3<&- 3>&-
  [ "${hdr:0:12}" = "414d51500301" ]
}
for _ in $(seq 1 60); do amqp10_ok && break; sleep 1; done
amqp10_ok || { log "rabbitmq does not serve AMQP 1.0 on 5672"; exit 1; }
log "rabbitmq up on 127.0.0.1:5672 with AMQP 1.0"
