// Package kafka is turnout's Kafka transport (input and output type "kafka"), built on
// franz-go's kgo client.
//
// The input is one member of a consumer group. Each record is dispatched to the engine; a
// partition's offset is committed (every commit_interval, when the partition is revoked, and on
// Close) only up to its first record that is not settled, so a crash, a rebalance or a restart
// makes the group read again from the first unsettled record: duplicates, never losses. Kafka
// has no per-record redelivery, so a record the engine fails transiently stays held and is
// dispatched again after a delay that doubles with each failure (retry_min_delay..
// retry_max_delay); a permanent failure (engine.Permanent, the engine dead-lettered it) settles
// it like a success. max_in_flight bounds the records read and not yet committable per input;
// rebalances wait until the records of one poll are dispatched (BlockRebalanceOnPoll), so a
// record is only dispatched while its partition is assigned. Records that are not CloudEvents
// reach the engine with DecodeErr and Raw (the engine dead-letters them); none is skipped.
//
// The output produces with an idempotent producer and acks from all in-sync replicas; Send
// returns nil only once the record is acknowledged, and concurrent Sends share produce
// requests. With key "partitionkey" the partitionkey extension becomes the record key.
//
// Bindings [CE-Kafka]: binary mode writes every attribute but datacontenttype as a ce_<name>
// header with the attribute's string as its UTF-8 value, datacontenttype as the content-type
// header, and the data as the record value; structured mode writes content-type
// application/cloudevents+json and the JSON event [CE-JSON]. The input accepts both per record:
// a content-type of application/cloudevents... means structured mode, otherwise a
// ce_specversion header means binary mode. The record key is not part of the event.
//
// Invariant: an offset is committed only when every record of its partition before it was
// settled by the engine, and an event is confirmed to the engine only after all in-sync
// replicas have it. franz-go reconnects by itself; nothing here needs a reconnect loop.
package kafka
