// Package mqtt is turnout's MQTT 3.1.1 transport: an input (Source) that subscribes to topic
// filters, an output (Sink) that publishes events, and an embedded broker for small deployments
// and the quickstart. Events travel in structured mode, always as JSON
// (application/cloudevents+json): MQTT 3.1.1 has no binary mode.
//
// Invariant: the input sends the PUBACK for a message only after the engine settled it with nil,
// and sends PUBACKs in the order the PUBLISHes arrived [MQTT-4.6.0-2]; the output returns nil
// from Send only once the broker's PUBACK arrived [MQTT-4.3.2-1]. Both use QoS 1, so every
// failure mode produces a duplicate, never a loss.
//
// # Input
//
// The input keeps a persistent session (CleanSession=0, a stable client_id): the broker keeps
// the subscriptions and queues messages while turnout is away, and redelivers every message that
// was not acknowledged, with DUP=1, when the session resumes [MQTT-4.4.0-1]. MQTT has no negative
// acknowledgement and a broker redelivers only on a new connection, so a message the engine
// settles with an error makes the input drop the connection and resume the session after the
// reconnect backoff; one reconnect serves every rejected message of that connection. After such
// a rejection no further PUBACK is sent on that connection (the PUBACKs would otherwise skip the
// rejected message), so the messages behind it come back as duplicates too. A message received on
// a connection that has since ended is never acknowledged on the new one: its PUBACK is dropped,
// and the broker redelivers it (a duplicate, never a loss). Payloads that are not a valid
// structured CloudEvent are handed to the engine with DecodeErr set, which dead-letters them.
//
// Brokers may drop messages they already accepted when a session's queue is full: mosquitto
// does so silently beyond max_queued_messages (default 1000). Run mosquitto with
// "max_queued_messages 0" (no limit) in front of a turnout input.
//
// # Output
//
// The output publishes with QoS 1 and retain=0, keeps many publications in flight, and sends to
// a fixed topic or to a topic built from the event's attributes (topic_template). It uses a
// clean session: publications that were in flight when the connection dropped fail and the
// engine retries them.
//
// # Embedded broker
//
// Broker runs an MQTT 3.1.1/5 broker inside turnout (for the quickstart and small sites).
// Without broker.persistence it keeps everything in memory: sessions, subscriptions and queued
// messages do not survive a restart of turnout. With broker.persistence: DIR it keeps the
// sessions that outlive their connection (CleanSession=0, or an MQTT 5 Session Expiry
// Interval), their subscriptions, their queued and unacknowledged QoS 1/2 messages and the
// retained messages in DIR/broker.db (bbolt), and they survive a restart and a SIGKILL. A
// QoS 1/2 publication that such a session subscribed to is written as a pending record before
// its PUBACK goes out and published again at start if turnout stopped before the subscribers'
// copies were written: duplicates are possible after a crash, losses are not. A publication
// that cannot be written is refused like one for a full queue.
//
// Queued messages never expire. A session holds at most max_queued (default 60000)
// unacknowledged QoS 1/2 messages; a publication that would go beyond that for any subscriber
// is refused (no PUBACK, publisher disconnected, so it publishes again later) rather than
// accepted and dropped. Queued messages are resent in publish order, except that the order can
// break where the broker's 16-bit sequence wraps (every 65536 publications).
//
// It listens on plain TCP (broker.listen, "none" for no plain listener) and, with broker.tls,
// on TLS (broker.tls.client_ca_file requires client certificates). Clients are anonymous
// unless broker.username/password (one user, allowed everything) or broker.users (each user
// with the topic filters it may publish to and subscribe to) is set.
//
// # Metrics
//
//   - turnout_transport_connected{transport="mqtt",name}: 1 while the input or output is
//     connected (and, for an input, subscribed).
//   - turnout_mqtt_redelivered_total{name}: messages an input received with DUP=1.
//   - turnout_broker_publishes_refused_total, turnout_broker_messages_dropped_total: the
//     embedded broker's refusals (queue full, or the publication could not be stored) and drops
//     (should stay 0).
//   - turnout_broker_access_denied_total{action="connect|publish|subscribe"}: refused clients
//     (bad username or password) and topics outside a user's filters.
//   - turnout_broker_messages_requeued_total: messages published to a session while a new
//     connection took it over, queued again on the new connection.
//   - turnout_broker_persistence_commits_total, turnout_broker_persistence_commit_seconds,
//     turnout_broker_persistence_errors_total, turnout_broker_persistence_inflight_messages,
//     turnout_broker_persistence_queued_operations, turnout_broker_persistence_replayed_total:
//     the broker's store (transactions and their time, failed writes, messages of persistent
//     sessions it holds, changes waiting to be written, publications published again at start).
//
// # Configuration
//
// Input:
//
//	inputs:
//	  alarms-in:
//	    type: mqtt
//	    brokers: ["tcp://127.0.0.1:1883"]
//	    client_id: turnout-alarms-in      # required, must be stable across restarts
//	    topics: ["devices/+/alarms", "care/#"]
//	    username: turnout
//	    password: secret
//	    keepalive: 30s
//	    connect_timeout: 10s
//	    reconnect_min_backoff: 500ms
//	    reconnect_max_backoff: 30s
//	    receive_buffer: 1024
//
// Output:
//
//	outputs:
//	  alarms-out:
//	    type: mqtt
//	    brokers: ["ssl://broker.example.org:8883"]
//	    topic_template: "alarms/{type}/{subject}"
//	    tls:
//	      ca_file: /etc/turnout/ca.pem
//	      cert_file: /etc/turnout/client.pem
//	      key_file: /etc/turnout/client.key
//
// Embedded broker (see BrokerConfig):
//
//	broker:
//	  enabled: true
//	  listen: 127.0.0.1:1883           # "none": TLS only
//	  persistence: broker              # under data_dir: data/broker/broker.db
//	  tls:
//	    listen: 0.0.0.0:8883
//	    cert_file: /etc/turnout/broker.pem
//	    key_file: /etc/turnout/broker.key
//	    client_ca_file: /etc/turnout/devices-ca.pem   # optional: mutual TLS
//	  users:
//	    - username: pendant
//	      password: ${PENDANT_PASSWORD}
//	      publish: ["homes/+/alarms"]
//	    - username: turnout
//	      password: ${TURNOUT_BROKER_PASSWORD}
//	      subscribe: ["homes/#"]
//	      publish: ["alarms/#"]
//
// # Topic templates
//
// A topic_template is literal text with placeholders {name}, where name is a CloudEvents
// attribute (specversion, id, source, type, subject, datacontenttype, dataschema, time) or an
// extension attribute ([a-z0-9]+). Each placeholder fills exactly one topic level: in the
// attribute's value '/', '+', '#' and U+0000 become '_', and a missing or empty attribute
// becomes "_". The literal text must not contain '+', '#', '{' or '}' other than in
// placeholders. Example: "alarms/{type}/{source}" with type "fall" and source "/home/42" gives
// "alarms/fall/_home_42".
package mqtt
