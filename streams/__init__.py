"""Kafka plumbing: settings, topics, the event codec, the stage runner, the upload producer."""
