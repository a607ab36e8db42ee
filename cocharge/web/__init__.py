"""The web console: server-rendered pages on the HTTP API's services (docs/console.md)."""
