"""The faust-streaming worker that ``bench/faust_exactly_once.py`` kills and cuts off.

It runs in the bench's own environment (``.venv-faust``: faust-streaming and aiokafka only,
nothing of the project) as ``python bench/faust_relay.py worker --without-web``. One agent
reads the source topic and sends one record per input to the sink, same key, same value,
under ``processing_guarantee="exactly_once"``: faust then writes each partition's outputs
and its input offsets in one transaction of a producer per partition.

Configured by the harness through the environment (``FAUST_RELAY_*``), so the same process
can be restarted with the same app id, group instance id and so transactional ids, as a
supervisor restarts a pod under its name. ``FAUST_RELAY_CONSUME_SINK=1`` adds a second agent
that reads the sink (see there why).
"""

from __future__ import annotations

import os

import faust

app = faust.App(
    os.environ["FAUST_RELAY_APP_ID"],
    broker=f"kafka://{os.environ['FAUST_RELAY_BROKER']}",
    processing_guarantee="exactly_once",
    store="memory://",
    datadir=os.environ["FAUST_RELAY_DATADIR"],
    topic_partitions=int(os.environ.get("FAUST_RELAY_PARTITIONS", "3")),
    # Static membership, as the project's stages have: the restarted worker takes its
    # partitions back at once instead of waiting for the killed one's session to expire.
    consumer_group_instance_id=os.environ.get("FAUST_RELAY_INSTANCE_ID", "relay-0"),
    broker_session_timeout=float(os.environ.get("FAUST_RELAY_SESSION_TIMEOUT_S", "30")),
    web_enabled=False,
)
raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
source = app.topic(os.environ["FAUST_RELAY_SOURCE"], **raw)
sink = app.topic(os.environ["FAUST_RELAY_SINK"], **raw)


@app.agent(source)
async def relay(stream: faust.StreamT[bytes]) -> None:
    """Send every input on, keyed by its id: one output per input is the whole contract."""
    async for key, value in stream.items():
        await sink.send(key=key, value=value)


if os.environ.get("FAUST_RELAY_CONSUME_SINK") == "1":
    # faust puts a send into a partition's transaction only when the destination topic is one
    # the worker itself consumes, co-partitioned with the source; otherwise the send goes out
    # through its plain producer, outside every transaction (faust-streaming/faust#177). An
    # agent that reads the sink and does nothing makes the sink such a topic.

    @app.agent(sink)
    async def watch(stream: faust.StreamT[bytes]) -> None:
        """Consume the sink, so that the relay's sends join the source partition's transaction."""
        async for _ in stream:
            pass


if __name__ == "__main__":
    app.main()
