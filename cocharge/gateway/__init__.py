"""The OCPP gateway: WebSocket server, one handler class per OCPP version, operator channel."""
