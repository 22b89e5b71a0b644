"""Change events: the CloudEvents envelope, the outbox relay to Kafka, subscriber helpers."""
