"""Virtual wallboxes and EVs that speak real OCPP over real sockets."""
