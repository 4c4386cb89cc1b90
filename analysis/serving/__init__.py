"""Serving an exported bundle in vLLM: the engine's own environment (`env`), a server's lifecycle
(`server`), requests against it (`client`), the deployment check (`check`) and evaluation of the shipped
artifact through the engine (`shipped`)."""
