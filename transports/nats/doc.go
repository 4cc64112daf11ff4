// Package nats is turnout's NATS JetStream transport (input and output type "nats"), built on
// nats.go's jetstream package.
//
// The input reads a durable pull consumer with explicit acknowledgement. A message is acked
// only after the engine settled it with nil; a transient failure naks it with a delay that
// doubles with each delivery (nak_min_delay..nak_max_delay), a permanent one (engine.Permanent)
// terminates it so that JetStream never delivers it again. The consumer's max_ack_pending bounds
// the messages turnout holds unacknowledged, and messages the engine keeps longer than a third
// of ack_wait are marked in progress so that JetStream does not redeliver them while they are
// being handled; messages held across a lost connection are no longer marked, so the server
// redelivers them after ack_wait (an at-least-once duplicate if the engine still settles them).
// Close naks the messages the engine has not settled by its deadline. Messages that are not CloudEvents reach the engine with DecodeErr and Raw
// (the engine dead-letters them); none is dropped.
//
// The output publishes with JetStream and counts a send as confirmed only when the stream's
// publish acknowledgement for that event arrives. Publishes are asynchronous (their
// acknowledgements come back on one subscription) and Send is called concurrently, so up to
// max_pending publishes await their acknowledgement together; further Sends wait for room. A
// missing or negative acknowledgement is a retryable error for its own event only.
//
// Bindings [CE-NATS]: binary mode writes every attribute, datacontenttype included, as a
// ce-<name> header, percent-encoded by the HTTP rules [CE-HTTP-3.1.3.2], with the data as the
// payload; structured mode writes Content-Type application/cloudevents+json and the JSON event
// [CE-JSON]. The input accepts both: a Content-Type of application/cloudevents... means
// structured mode, otherwise a ce-specversion header means binary mode.
//
// Invariant: a JetStream message is acknowledged only after the engine settled it with nil, and
// an event is confirmed to the engine only after its PubAck; the nats.go client reconnects
// by itself, and what was unacknowledged when a connection was lost is redelivered by the server.
package nats
