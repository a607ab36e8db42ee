"""The standard security events of OCPP (2.0.1 Part 2 appendix; the 1.6 security
whitepaper's list) and which are critical: a critical one is raised as an MQTT event and
shown by `cocharge station show`; every one is kept as the station's `security` event."""

from __future__ import annotations

# Critical in both lists (1.6 names them ...CentralSystem... where 2.0.1 says ...Csms...).
_CRITICAL = {"FirmwareUpdated", "SettingSystemTime", "StartupOfTheDevice", "ResetOrReboot",
             "SecurityLogWasCleared", "MemoryExhaustion", "TamperDetectionActivated",
             "MaintenanceLoginAccepted", "MaintenanceLoginFailed"}
_NOT_CRITICAL = {"FailedToAuthenticateAtCsms", "CsmsFailedToAuthenticate",
                 "ReconfigurationOfSecurityParameters", "InvalidMessages",
                 "AttemptedReplayAttacks", "InvalidFirmwareSigningCertificate",
                 "InvalidCsmsCertificate", "InvalidTLSVersion", "InvalidTLSCipherSuite"}

CRITICAL: dict[str, frozenset[str]] = {
    # InvalidFirmwareSignature is critical in 2.x, not in the 1.6 whitepaper.
    "2.0.1": frozenset(_CRITICAL | {"InvalidFirmwareSignature"}),
    "1.6": frozenset(_CRITICAL),
}
KNOWN: dict[str, frozenset[str]] = {
    "2.0.1": CRITICAL["2.0.1"] | _NOT_CRITICAL | {"InvalidChargingStationCertificate"},
    "1.6": CRITICAL["1.6"] | {n.replace("Csms", "CentralSystem") for n in _NOT_CRITICAL}
    | {"InvalidFirmwareSignature", "InvalidChargePointCertificate"},
}
CRITICAL["2.1"], KNOWN["2.1"] = CRITICAL["2.0.1"], KNOWN["2.0.1"]  # the same list in 2.1


def criticality(protocol: str, event_type: str) -> str:
    """critical | normal | unknown (a vendor's own type: raised like a critical one, since
    nobody can tell that it is harmless)."""
    if event_type in CRITICAL.get(protocol, frozenset()):
        return "critical"
    if event_type in KNOWN.get(protocol, frozenset()):
        return "normal"
    return "unknown"
