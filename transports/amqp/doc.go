// Package amqp is turnout's AMQP 1.0 transport: an input (Source) that receives from a source
// address on a receiver link, and an output (Sink) that sends to a target address on a sender
// link, both carrying CloudEvents per the CloudEvents AMQP binding [CE-AMQP], binary or
// structured mode.
//
// Invariant: the input settles a delivery as accepted only after the engine settled it with nil;
// the output returns nil from Send only once the broker settled the delivery as accepted
// [AMQP 1.0 §3.4.2]. A connection that ends leaves the broker with every unsettled delivery,
// which it redelivers, and fails every send waiting for its disposition, which the engine
// retries: every failure produces a duplicate, never a loss.
//
// # Input
//
// The input attaches one receiver link on a session and connection of its own to the
// configured address, with a durable source terminus (durable: true, the default) so that
// RabbitMQ declares /queue/NAME as a durable queue. It settles in mode first, by hand
// [AMQP 1.0 §2.6.12]: accepted when the engine settles with nil; rejected, carrying the reason
// as an amqp:internal-error, when the engine's error is permanent (engine.IsPermanent), so that
// the broker dead-letters it where a dead-letter policy exists; released when the error is
// transient, so that it is delivered again at once. It never sends modified, which ends the
// session on RabbitMQ 3.10.
//
// Link credit [AMQP 1.0 §2.6.7] is managed by hand: the input issues credit only once the
// previous credit is used up, in batches of at least half of credit, so that unsettled
// deliveries plus unused credit never exceed credit. go-amqp's automatic credit stalls delivery
// on RabbitMQ 3.10.
//
// A message that is not a valid CloudEvent is handed to the engine with DecodeErr set, which
// dead-letters it. After a lost connection the input reconnects with backoff; settlements of
// deliveries from the ended connection are dropped (the broker redelivers them).
//
// # Output
//
// The output attaches one sender link, on a session and connection of its own, with a durable
// target terminus, and sends every message with header durable=true. Send is called
// concurrently by the engine; each call sends and then waits for its own disposition, so many
// deliveries are in flight together, up to max_in_flight (default 256) on the link; further
// sends wait for a slot in turnout. Accepted is success; Released, Modified and Rejected are
// errors carrying the broker's condition and description, all retryable: a broker rejects a
// publication it cannot take now (a full queue), which says nothing against the event. (RabbitMQ
// 3.10 ends the session instead when a reject-publish queue is full; the sends in flight fail and
// the output reconnects.) An event that cannot be encoded or is larger than the link allows is a
// permanent error. While no link is attached Send fails at once with ErrNotConnected.
//
// # Encoding [CE-AMQP]
//
// Binary mode (the default) writes every attribute except data and datacontenttype as the
// application property cloudEvents_<name> with the matching AMQP type: Boolean as boolean,
// Integer as int, String as string, Binary as binary, URI and URI-reference as string, Timestamp
// as timestamp (a time finer than a millisecond, which an AMQP timestamp cannot hold, as its
// RFC 3339 string). datacontenttype is properties.content-type and the data is the single data
// section of the body. Structured mode sends content-type application/cloudevents+json and the
// JSON event as the body, with data_base64 for data that is not text.
//
// The input decides the mode by the content type: application/cloudevents+json is structured,
// anything else needs a cloudEvents_specversion (or cloudEvents:specversion) application
// property. It reads both prefixes, a body of data sections or an amqp-value string or binary,
// and maps AMQP types back: boolean, string, binary and timestamp to their CloudEvents types,
// every integer type within the int32 range to Integer, symbol and uuid to String.
//
// # Addresses on RabbitMQ 3.x
//
//   - /queue/NAME: the queue NAME, declared on attach if missing (durable only when the terminus
//     is durable; a mismatch with an existing queue fails the attach).
//   - /amq/queue/NAME: an existing queue, not declared. A send to a missing queue is accepted
//     and lost.
//   - /exchange/X/KEY (output): the exchange X with routing key KEY. A send that no binding
//     routes is accepted and lost: protect it with an alternate exchange.
//
// # Metrics
//
//   - turnout_transport_connected{transport="amqp",name}: 1 while the link is attached.
//   - turnout_amqp_redelivered_total{name}: deliveries an input received that the broker had
//     delivered before (first-acquirer false or delivery-count above 0).
//
// # Configuration
//
// Input:
//
//	inputs:
//	  alarms:
//	    type: amqp
//	    url: amqp://guest:guest@127.0.0.1:5672
//	    address: /queue/alarms
//	    credit: 256
//	    durable: true
//	    connect_timeout: 10s
//	    reconnect_min_backoff: 500ms
//	    reconnect_max_backoff: 30s
//
// Output:
//
//	outputs:
//	  processed:
//	    type: amqp
//	    url: amqps://broker.example.org:5671
//	    username: turnout
//	    password: ${AMQP_PASSWORD}
//	    address: /queue/processed
//	    mode: binary
//	    tls:
//	      ca_file: /etc/turnout/ca.pem
//
// sasl is plain (default when a username is set, in username or in the URL) or anonymous
// (default otherwise) [AMQP 1.0 §5.3].
package amqp
