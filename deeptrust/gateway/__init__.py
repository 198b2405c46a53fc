"""The HTTP ingest gateway: uploads in over HTTP, upload events out to Kafka, results back.

``settings`` reads the environment, ``sniff`` decides what an upload is, ``delivery`` waits
for the broker's acknowledgement of each event, ``status`` keeps the pipeline's results per
image, ``metrics`` counts requests, ``app`` is the FastAPI application and ``runtime``
wires them together for a server process.
"""
