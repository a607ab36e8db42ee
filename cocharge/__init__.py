"""cocharge: an OCPP 1.6J, 2.0.1 and 2.1 central system for shared EV charging."""

__version__ = "0.1.0"
