"""The HTTP API and the web console, served by `cocharge serve` (docs/api.md, docs/console.md)."""
