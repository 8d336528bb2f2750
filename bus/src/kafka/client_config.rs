//! The librdkafka properties of each kind of client. Public so that tools (the ingest
//! benchmark's raw baseline) build clients identical to mcpulse's own.

use rdkafka::ClientConfig;

use super::KafkaConfig;

/// Properties every client shares: brokers, client id, the user's pass-through options.
pub fn common(config: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", config.bootstrap_servers())
        .set("client.id", &config.client_id)
        .set(
            "socket.connection.setup.timeout.ms",
            millis(config.request_timeout),
        );
    // While brokers are down, librdkafka times queued messages out only when a broker
    // thread wakes from its reconnect backoff (10 s at most by default): keep the backoff
    // well under the delivery timeout so a produce fails when it should.
    let backoff_max = (config.delivery_timeout / 2).clamp(
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(10),
    );
    client.set("reconnect.backoff.max.ms", millis(backoff_max));
    for (key, value) in &config.options {
        client.set(key, value);
    }
    client
}

/// The producer: idempotent (no duplicates or reordering on retries, acks from all
/// in-sync replicas), Java-compatible murmur2 partitioning so every client agrees where
/// a key lives, and a bounded delivery timeout so callers learn of an outage.
pub fn producer(config: &KafkaConfig) -> ClientConfig {
    let mut client = common(config);
    client
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("message.timeout.ms", millis(config.delivery_timeout))
        .set("linger.ms", "5")
        .set("message.max.bytes", config.max_message_bytes.to_string());
    for (key, value) in &config.producer_options {
        client.set(key, value);
    }
    client
}

/// A group member: nothing is committed or stored automatically (the runtime commits
/// what is durable), cooperative rebalancing, reading from the start of new partitions.
pub fn consumer(config: &KafkaConfig, group: &str) -> ClientConfig {
    let mut client = common(config);
    let session = config.session_timeout.as_millis().max(1);
    client
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", session.to_string())
        .set("heartbeat.interval.ms", (session / 3).max(1).to_string())
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "100")
        // librdkafka pauses fetching for a whole second once its queue is full; the
        // runtime drains it in milliseconds.
        .set("fetch.queue.backoff.ms", "10")
        .set("queued.max.messages.kbytes", "65536");
    for (key, value) in &config.consumer_options {
        client.set(key, value);
    }
    client
}

/// A client that only reads a group's committed offsets (it never joins the group).
pub fn offsets_reader(config: &KafkaConfig, group: &str) -> ClientConfig {
    let mut client = common(config);
    client
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    client
}

fn millis(d: std::time::Duration) -> String {
    d.as_millis().max(1).to_string()
}
