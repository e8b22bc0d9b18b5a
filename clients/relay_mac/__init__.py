"""relay-mac: the reference mac-client of the pairing relay.

`client.MacClient` holds the logic (connect, register, keepalive, reconnect, relay
frames) and talks to the outside only through an event sink and an input source,
so tests drive it without a terminal; `cli` is the thin console front end.
"""
