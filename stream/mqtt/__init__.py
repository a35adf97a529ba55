"""The one MQTT edge of the runtime, used by the MQTT sink, the MQTT input source, the cluster workers and
the feeder.

Modules: ``settings`` (broker URL, credentials, TLS), ``topics`` (safe topic names), ``inbound`` (input
validation, error rate limits), ``wire`` (one route for outgoing frames, one conversion of input messages
into utterances, the status record), ``backoff`` (the retry policy), ``client`` (the reconnecting client
loop), ``spool`` and ``publisher`` (the on-disk outbound spool). The contract: docs/asyncapi.yaml.
"""
