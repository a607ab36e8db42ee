"""The database schema: one definition for SQLite and PostgreSQL.

Times are stored as naive UTC datetimes on both backends; energy in integer Wh.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# The measurand of the meter's energy register, as meter_samples stores it (Wh).
ENERGY_REGISTER = "Energy.Active.Import.Register"

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL wants BIGINT for big tables.
BigId = BigInteger().with_variant(Integer(), "sqlite")

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", DateTime, nullable=False),
)

stations = Table(
    "stations",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("password_hash", String(255)),
    # A new password the station accepted (rotation): valid beside the old one until the
    # station connects with it, which makes it the password.
    Column("next_password_hash", String(255)),
    Column("owner", String(200)),
    Column("connectors", Integer, nullable=False, default=1),
    Column("max_power_w", Integer),
    # accepted | pending
    Column("admission", String(16), nullable=False, default="accepted"),
    Column("protocol", String(16)),
    Column("vendor", String(64)),
    Column("model", String(64)),
    Column("serial", String(64)),
    Column("firmware", String(64)),
    Column("firmware_status", String(64)),
    Column("last_boot_at", DateTime),
    Column("last_seen_at", DateTime),
    Column("created_at", DateTime, nullable=False),
    # v3: neighbourhood, for the revenue calculator's local demand and prices
    Column("area", String(100)),
    # v5: the gateway node holding the station's connection (None: not connected)
    Column("node", String(128)),
    # v12: 3 once the station connected with a client certificate of ours (from then on it
    # must); set lower only by an operator's forced downgrade. None: 1 or 2 (by the port).
    Column("security_profile", Integer),
    # v26: where it is, for drivers' "stations near me" (WGS-84 degrees) and its address
    Column("lat", Float),
    Column("lon", Float),
    Column("address", String(200)),
)

connector_status = Table(
    "connector_status",
    metadata,
    Column("station_id", String(64), ForeignKey("stations.id", ondelete="CASCADE"), primary_key=True),
    Column("connector_id", Integer, primary_key=True),
    Column("status", String(32), nullable=False),
    Column("error_code", String(64)),
    Column("updated_at", DateTime, nullable=False),
)

members = Table(
    "members",
    metadata,
    Column("tag", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("phone", String(32)),
    # active | blocked
    Column("status", String(16), nullable=False, default="active"),
    Column("expires_at", DateTime),
    Column("created_at", DateTime, nullable=False),
    # v2: what the sharing rules look at
    Column("groups", String(500)),  # comma-separated group names ("block-7,ev-club")
    Column("vehicle_model", String(100)),
    Column("quota_wh", BigInteger),  # free energy per month (OEM membership quota)
    # v3
    Column("prefers_green", Boolean),  # chooses green energy where the charger is green
    # v4
    Column("referred_by", String(64)),  # the member who referred this one (set once, at add)
    # v12: a household or fleet: its cards stop each other's sessions (groupIdToken/parentIdTag)
    Column("household", String(20)),
    # v16: what pays part of a session before the wallet: "" | "coins" | "points" | "coins,points"
    Column("pay_with", String(20)),
    # v19: the idToken type a station last presented the member's token with (ISO14443,
    # ISO15693): sent back in remote starts, local lists and customer information (a
    # station matches token and type); None: not seen yet.
    Column("token_type", String(20)),
    # v25: the language of the member's messages at the charger (zh | en); None: the
    # platform's (display_language).
    Column("language", String(8)),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("station_id", String(64), nullable=False),
    Column("connector_id", Integer, nullable=False),
    # The charger's own transaction id: str(id) for OCPP 1.6, the charger's UUID for 2.0.1.
    Column("tx_ref", String(64)),
    Column("protocol", String(16), nullable=False),
    Column("id_tag", String(64)),
    Column("started_at", DateTime),
    Column("ended_at", DateTime),
    Column("meter_start_wh", BigInteger),
    Column("meter_stop_wh", BigInteger),
    Column("energy_wh", BigInteger),
    # active | completed | flagged | orphan
    Column("status", String(16), nullable=False),
    Column("stop_reason", String(64)),
    Column("flag_reason", Text),
    Column("last_seq_no", Integer),
    Column("created_at", DateTime, nullable=False),
    # v2: sharing control
    Column("booking_id", BigInteger),
    Column("group_id", BigInteger),
    Column("limit_wh", BigInteger),
    Column("cutoff_at", DateTime),
    Column("cutoff_reason", String(16)),  # budget | energy | quota | slot | window
    Column("fault", String(32)),  # overcurrent | ground fault | over-temperature
    Column("idle_started_at", DateTime),  # charging over, car still plugged in
    Column("idle_ended_at", DateTime),
    Column("idle_minutes", Integer),
    Column("idle_fee_fen", Integer),
    # v3: the tariff in force when the session started (sealed); a prepaid budget
    Column("tariff_id", BigInteger),
    Column("budget_fen", BigInteger),
    # v13: energy drawn while the site's PV surplus covered it (a PV-managed green charger);
    # None: not measured (the certificate then counts the session's whole energy).
    Column("green_wh", BigInteger),
    # v18: what the charger's clock said where it was not used (cocharge/gateway/clock.py);
    # a 1.6 start's own time then (a repeated StartTransaction matches on it).
    Column("clock", Text),
    Column("charger_start", String(40)),
    # v19: what a 2.1 charger calculated itself (costDetails at the end, fen) and its idle
    # part; checked against our settlement (settle.py), never billed as such.
    Column("charger_cost_fen", BigInteger),
    Column("charger_idle_fen", BigInteger),
    Column("charger_tariff", String(60)),  # the tariff id it priced the session with
    UniqueConstraint("station_id", "tx_ref", name="uq_sessions_station_tx"),
)
Index("ix_sessions_start_key", sessions.c.station_id, sessions.c.connector_id,
      sessions.c.id_tag, sessions.c.started_at)
Index("ix_sessions_status", sessions.c.status)

# One row per (station, transaction, seqNo) seen: the duplicate filter of TransactionEvent.
tx_events = Table(
    "tx_events",
    metadata,
    Column("station_id", String(64), primary_key=True),
    Column("tx_ref", String(64), primary_key=True),
    Column("seq_no", Integer, primary_key=True),
    Column("event_type", String(16), nullable=False),
    Column("ts", DateTime, nullable=False),
)

meter_samples = Table(
    "meter_samples",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("session_id", BigInteger),
    Column("station_id", String(64), nullable=False),
    Column("connector_id", Integer, nullable=False),
    Column("ts", DateTime, nullable=False),
    Column("measurand", String(64), nullable=False),
    Column("phase", String(8)),
    Column("value", Float, nullable=False),
    Column("unit", String(16)),
    Column("context", String(32)),
)
Index("ix_meter_samples_session", meter_samples.c.session_id, meter_samples.c.ts)

station_events = Table(
    "station_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("station_id", String(64), nullable=False),
    Column("ts", DateTime, nullable=False),
    # security | event | report | firmware | diagnostics | data_transfer | protocol_error
    Column("kind", String(32), nullable=False),
    Column("payload", Text, nullable=False),
)
Index("ix_station_events_station", station_events.c.station_id, station_events.c.ts)

# A 2.0.1 station's device model as its NotifyReports told it (GetBaseReport / GetReport):
# one row per component, variable and attribute type; "" and 0 stand for "none".
station_variables = Table(
    "station_variables",
    metadata,
    Column("station_id", String(64), primary_key=True),
    Column("component", String(50), primary_key=True),
    Column("component_instance", String(50), primary_key=True, default=""),
    Column("evse_id", Integer, primary_key=True, default=0),
    Column("connector_id", Integer, primary_key=True, default=0),
    Column("variable", String(50), primary_key=True),
    Column("variable_instance", String(50), primary_key=True, default=""),
    Column("attribute_type", String(16), primary_key=True, default="Actual"),
    Column("value", String(2500)),
    Column("mutability", String(16)),
    Column("data_type", String(16)),
    Column("unit", String(16)),
    Column("request_id", Integer),
    Column("updated_at", DateTime, nullable=False),
)

# The local authorization list each station holds, as it last accepted it (SendLocalList):
# its version and entries (JSON {tag: expiry ISO or null}); entries NULL = send a full list.
local_lists = Table(
    "local_lists",
    metadata,
    Column("station_id", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("entries", Text),
    Column("status", String(32), nullable=False),  # Accepted | Failed | VersionMismatch | ...
    Column("updated_at", DateTime, nullable=False),
)

# Diagnostics (1.6 GetDiagnostics) and logs (GetLog) the operator asked for: the station
# uploads the file to the gateway's upload endpoint with the request's one-time token.
log_uploads = Table(
    "log_uploads",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),  # also GetLog's requestId
    Column("station_id", String(64), nullable=False),
    Column("kind", String(16), nullable=False),       # diagnostics | log
    Column("log_type", String(32)),                    # DiagnosticsLog | SecurityLog
    Column("token", String(64), nullable=False, unique=True),
    # requested | Accepted | Rejected | Uploading | Uploaded | UploadFailed | ... (the
    # station's answer and notifications), received (the file arrived)
    Column("status", String(32), nullable=False),
    Column("filename", String(255)),
    Column("size", BigInteger),
    Column("content", LargeBinary),
    Column("requested_at", DateTime, nullable=False),
    Column("received_at", DateTime),
    Column("updated_at", DateTime, nullable=False),
)
Index("ix_log_uploads_station", log_uploads.c.station_id, log_uploads.c.requested_at)

# Firmware images the gateway serves itself (`cocharge firmware add`).
firmware_files = Table(
    "firmware_files",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False),
    Column("version", String(64), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("created_at", DateTime, nullable=False),
    # Signed firmware (1.6 SignedUpdateFirmware, 2.0.1): base64 signature, PEM certificate.
    Column("signature", String(800)),
    Column("signing_certificate", Text),
)

# A firmware campaign: a version rolled out to chosen stations, a few at a time.
firmware_campaigns = Table(
    "firmware_campaigns",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("version", String(64), nullable=False),   # what the stations should run after it
    Column("file_id", BigInteger),                     # served by the gateway, or
    Column("url", String(512)),                        # fetched from the operator's server
    Column("at_once", Integer, nullable=False),
    Column("retries", Integer, nullable=False),
    Column("status", String(16), nullable=False),      # running | done | cancelled
    Column("signature", String(800)),                  # from the file, or given with the URL
    Column("signing_certificate", Text),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

# 2.0.1 variable monitors a station holds: set by `remote set-variable-monitoring` (with the
# id the station gave) or reported by NotifyMonitoringReport.
station_monitors = Table(
    "station_monitors",
    metadata,
    Column("station_id", String(64), primary_key=True),
    Column("monitor_id", Integer, primary_key=True),
    Column("component", String(50), nullable=False),
    Column("evse_id", Integer, nullable=False),        # 0: the station
    Column("variable", String(50), nullable=False),
    Column("type", String(24), nullable=False),
    Column("value", String(32), nullable=False),         # as the station gave it
    Column("severity", Integer, nullable=False),
    Column("transaction", Boolean, nullable=False),
    Column("source", String(8), nullable=False),       # set | report
    Column("updated_at", DateTime, nullable=False),
)

# Certificates our CA signed for stations (SignCertificate), and what became of them.
station_certificates = Table(
    "station_certificates",
    metadata,
    Column("serial", String(40), primary_key=True),  # hex, as OCPP's hash data gives it
    Column("station_id", String(64), nullable=False, index=True),
    Column("certificate_type", String(32), nullable=False),  # ChargingStationCertificate
    Column("ca_fingerprint", String(64), nullable=False),  # the CA that signed it
    Column("not_before", DateTime, nullable=False),
    Column("not_after", DateTime, nullable=False),
    Column("pem", Text, nullable=False),
    # signed (sent in CertificateSigned) | installed (the station accepted it) | refused
    # (the station rejected it) | revoked
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    # when the gateway last asked the station for a new CSR (renewal before expiry)
    Column("renewal_asked_at", DateTime),
)

firmware_targets = Table(
    "firmware_targets",
    metadata,
    Column("campaign_id", BigInteger, primary_key=True),
    Column("station_id", String(64), primary_key=True),
    # pending | sent | (the station's FirmwareStatusNotification statuses) | done | failed
    Column("status", String(32), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("detail", String(255)),
    Column("sent_at", DateTime),
    Column("updated_at", DateTime, nullable=False),
)

# Running gateway processes and their operator channel (see docs/operations.md).
nodes = Table(
    "nodes",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("operator_url", String(255), nullable=False),
    Column("token", String(128), nullable=False),
    Column("pid", Integer),
    Column("started_at", DateTime, nullable=False),
    Column("alive", Boolean, nullable=False, default=True),
    # v14: which database the node writes to (`store.db.identity`): a copy of the database
    # (a backup) keeps this row, but the CLI opening the copy sees another identity and
    # never sends commands to the live gateway through it.
    Column("database", String(255)),
    # v19: the node's lease, renewed every few seconds while it runs (node_lease_s): a node
    # killed with -9 leaves its row, and its stations show offline once the lease ends.
    Column("lease_until", DateTime),
)

# v23: a host pairs a new charger by a code (issue 33): the station's id and its owner are
# set when the code is made; the charger's first connection with the code as its password
# registers it (its password is then rotated at once).
pairing_codes = Table(
    "pairing_codes",
    metadata,
    Column("station_id", String(64), primary_key=True),
    Column("owner", String(200), nullable=False),
    Column("connectors", Integer, nullable=False, default=1),
    Column("max_power_w", Integer),
    Column("code_hash", String(64), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("expires_at", DateTime, nullable=False),
    Column("used_at", DateTime),
)

# v22: members who sign in by phone and password (issue 33): an invitation (a one-time
# link from the operator, a host or a property) makes the login; the password is scrypt.
invitations = Table(
    "invitations",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("tag", String(20), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("expires_at", DateTime, nullable=False),
    Column("used_at", DateTime),
)

logins = Table(
    "logins",
    metadata,
    Column("phone", String(32), primary_key=True),
    Column("tag", String(20), nullable=False),
    Column("password_hash", String(255), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("last_login_at", DateTime),
)

# v24: members' passkeys (WebAuthn, issue 33): the credential's id and public key (COSE),
# its signature counter; and the one-time challenges the console handed out (by purpose:
# register | login; a registration's member, or the invitation it accepts).
passkeys = Table(
    "passkeys",
    metadata,
    Column("credential_id", String(255), primary_key=True),  # base64url
    Column("tag", String(20), nullable=False),
    Column("public_key", LargeBinary, nullable=False),
    Column("sign_count", BigInteger, nullable=False, default=0),
    Column("created_at", DateTime, nullable=False),
    Column("last_used_at", DateTime),
)

passkey_challenges = Table(
    "passkey_challenges",
    metadata,
    Column("challenge", String(128), primary_key=True),  # base64url
    Column("purpose", String(16), nullable=False),
    Column("tag", String(20)),
    Column("invitation", String(64)),  # the invitation's token hash
    Column("expires_at", DateTime, nullable=False),
)

# v21: who did what (issue 33): every command sent to a station and every money operation,
# with who asked (an API key's name and role, a CLI user, a property over MQTT) and from where.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("at", DateTime, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("origin", String(200)),
    Column("action", String(64), nullable=False),
    Column("station_id", String(64)),
    Column("account", String(128)),
    Column("details", Text, nullable=False),
)
Index("ix_audit_station", audit_log.c.station_id, audit_log.c.id)
Index("ix_audit_account", audit_log.c.account, audit_log.c.id)

# v20: which node allocates each load-managed site (issue 32): a lease, renewed by its owner;
# when it ends (the node died) another node holding the site's stations takes it.
site_leases = Table(
    "site_leases",
    metadata,
    Column("site", String(64), primary_key=True),
    Column("node", String(64), nullable=False),
    Column("until", DateTime, nullable=False),
)


# --- v2: sharing control ---------------------------------------------------------------------

# The owner's rules (cocharge.stations.policy.SharingRules as JSON); connector 0 = every connector.
station_rules = Table(
    "station_rules",
    metadata,
    Column("station_id", String(64), primary_key=True),
    Column("connector_id", Integer, primary_key=True),
    Column("rules", Text, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

bookings = Table(
    "bookings",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("station_id", String(64), nullable=False),
    Column("connector_id", Integer, nullable=False),
    Column("tag", String(64), nullable=False),
    Column("starts_at", DateTime, nullable=False),
    Column("ends_at", DateTime, nullable=False),
    # booked | honoured | cancelled | no_show
    Column("status", String(16), nullable=False),
    # A ReserveNow the charger accepted and that has not been cancelled yet.
    Column("reserved", Boolean, nullable=False, default=False),
    Column("group_id", BigInteger),
    Column("session_id", BigInteger),
    Column("created_at", DateTime, nullable=False),
)
Index("ix_bookings_slot", bookings.c.station_id, bookings.c.connector_id, bookings.c.starts_at)
Index("ix_bookings_status", bookings.c.status, bookings.c.ends_at)

charge_groups = Table(
    "charge_groups",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("station_id", String(64), nullable=False),
    Column("slot_start", DateTime, nullable=False),
    Column("slot_end", DateTime, nullable=False),
    Column("min_members", Integer, nullable=False),
    # forming | formed | failed
    Column("status", String(16), nullable=False),
    Column("initiator", String(64)),
    Column("formed_at", DateTime),
    Column("created_at", DateTime, nullable=False),
    # v16: the member whose session is free, chosen once when the group forms (highest credit
    # at that moment, ties by join time); None when nobody has credit
    Column("free_tag", String(64)),
)

group_members = Table(
    "group_members",
    metadata,
    Column("group_id", BigInteger, primary_key=True),
    Column("tag", String(64), primary_key=True),
    Column("joined_at", DateTime, nullable=False),
)

# Commands for stations that were offline, delivered at their next BootNotification.
pending_commands = Table(
    "pending_commands",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("station_id", String(64), nullable=False),
    Column("command", String(32), nullable=False),
    Column("args", Text, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("expires_at", DateTime, nullable=False),
    # pending | delivered | failed | expired
    Column("status", String(16), nullable=False),
    Column("delivered_at", DateTime),
    Column("result", Text),
)
Index("ix_pending_commands_station", pending_commands.c.station_id, pending_commands.c.status)


# --- v3: settlement ---------------------------------------------------------------------------

# Tariffs are never edited: a new one is added, sessions keep the one they started with.
tariffs = Table(
    "tariffs",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("station_id", String(64), nullable=False),
    Column("connector_id", Integer, nullable=False),  # 0 = every connector
    Column("body", Text, nullable=False),  # cocharge.settlement.tariff.tariff_to_json
    Column("created_at", DateTime, nullable=False),
)
Index("ix_tariffs_station", tariffs.c.station_id, tariffs.c.connector_id, tariffs.c.created_at)

# Revenue-share terms of a station (`cocharge split set`).
station_terms = Table(
    "station_terms",
    metadata,
    Column("station_id", String(64), primary_key=True),
    Column("body", Text, nullable=False),  # cocharge.settlement.settle.terms_to_json
    Column("updated_at", DateTime, nullable=False),
)

ledger_accounts = Table(
    "ledger_accounts",
    metadata,
    Column("account", String(120), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("no_overdraft", Boolean, nullable=False, default=False),
    Column("created_at", DateTime, nullable=False),
)

# Written only by cocharge.settlement.ledger, from the transfers.
ledger_balances = Table(
    "ledger_balances",
    metadata,
    Column("account", String(120), primary_key=True),
    Column("asset", String(16), primary_key=True),
    Column("balance", BigInteger, nullable=False),
)

# Append-only; each row carries the hash of the previous one.
ledger_transfers = Table(
    "ledger_transfers",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("id", String(160), nullable=False, unique=True),  # idempotency id
    Column("batch", String(160), nullable=False),
    Column("asset", String(16), nullable=False),
    Column("debit", String(120), nullable=False),
    Column("credit", String(120), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("ref", String(64)),
    Column("memo", Text, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)
Index("ix_ledger_transfers_debit", ledger_transfers.c.debit, ledger_transfers.c.seq)
Index("ix_ledger_transfers_credit", ledger_transfers.c.credit, ledger_transfers.c.seq)
Index("ix_ledger_transfers_ref", ledger_transfers.c.ref)

# One row: the last transfer's sequence number and hash; also the writers' lock.
ledger_head = Table(
    "ledger_head",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

# Signed checkpoints of the ledger (settlement/checkpoints.py): the platform's own copy;
# witnesses keep theirs.
ledger_checkpoints = Table(
    "ledger_checkpoints",
    metadata,
    Column("id", String(16), primary_key=True),
    Column("count", BigInteger, nullable=False),
    Column("head", String(64), nullable=False),
    Column("at", DateTime, nullable=False),
    Column("body", Text, nullable=False),
)

# A member's or payee's disagreement with a bill or a booking, until an operator resolves it
# (with a correction: ledger.correct) or rejects it (settlement/disputes.py).
disputes = Table(
    "disputes",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("opened_by", String(120), nullable=False),
    Column("subject", String(80), nullable=False),  # "session:<id>" or "transfer:<id>"
    Column("text", Text, nullable=False),
    Column("status", String(16), nullable=False),  # open | resolved | rejected
    Column("resolution", Text),
    Column("correction", String(40)),
    Column("resolved_by", String(120)),
    Column("opened_at", DateTime, nullable=False),
    Column("resolved_at", DateTime),
)

settlements = Table(
    "settlements",
    metadata,
    Column("session_id", BigInteger, primary_key=True),
    Column("tariff_id", BigInteger),
    Column("payer", String(64)),
    Column("cdr", Text, nullable=False),
    Column("cost_fen", BigInteger, nullable=False),
    Column("discounts", Text, nullable=False),
    Column("payable_fen", BigInteger, nullable=False),
    Column("paid_fen", BigInteger, nullable=False),
    Column("owed_fen", BigInteger, nullable=False),
    Column("split", Text, nullable=False),
    Column("settled_at", DateTime, nullable=False),
    # The overstay fee, billed when the car has left (None: not known yet).
    Column("idle_fee_fen", BigInteger),
    Column("idle_settled_at", DateTime),
    # v16: what coins and green points paid of it: [[asset, units, fen], ...] (part of paid_fen)
    Column("redeemed", Text),
)


# --- v4: rewards ------------------------------------------------------------------------------

# The operator's reward rule table; every change is a new version (cocharge.settlement.rewards).
reward_rules = Table(
    "reward_rules",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("body", Text, nullable=False),
    Column("changed", String(200), nullable=False),  # what this version changed
    Column("created_at", DateTime, nullable=False),
)

# Every reward-earning event applied, once: session events by session, outside events by
# their own id ("post_featured:post-991").
reward_events = Table(
    "reward_events",
    metadata,
    Column("id", String(160), primary_key=True),
    Column("tag", String(64), nullable=False),
    Column("event", String(32), nullable=False),
    Column("ref", String(64)),
    Column("coins", Integer, nullable=False),
    Column("credit", Integer, nullable=False),
    Column("rules_version", Integer, nullable=False),
    Column("applied_at", DateTime, nullable=False),
)
Index("ix_reward_events_tag", reward_events.c.tag, reward_events.c.applied_at)

green_certificates = Table(
    "green_certificates",
    metadata,
    Column("id", String(32), primary_key=True),  # GC-<session id>
    Column("session_id", BigInteger, nullable=False, unique=True),
    Column("tag", String(64), nullable=False),
    Column("station_id", String(64), nullable=False),
    Column("energy_wh", BigInteger, nullable=False),
    Column("started_at", DateTime, nullable=False),
    Column("ended_at", DateTime, nullable=False),
    Column("co2_g", BigInteger, nullable=False),
    Column("factor", String(16), nullable=False),  # kg CO2 per kWh
    Column("factor_year", Integer, nullable=False),
    Column("factor_source", String(200), nullable=False),
    Column("digest", String(64), nullable=False),  # SHA-256 of the fields above, on the ledger
    Column("issued_at", DateTime, nullable=False),
)
Index("ix_green_certificates_tag", green_certificates.c.tag)

# Green-point purchases; what is locked or released lives on the ledger (GREEN_PT).
point_orders = Table(
    "point_orders",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("tag", String(64), nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("multiplier", String(16), nullable=False),
    Column("granted", BigInteger, nullable=False),  # GREEN_PT units
    Column("daily", BigInteger, nullable=False),    # GREEN_PT units released per day
    Column("purchased_on", Date, nullable=False),
    Column("ref", String(64), unique=True),
    Column("created_at", DateTime, nullable=False),
)
Index("ix_point_orders_tag", point_orders.c.tag, point_orders.c.id)

# One row per release day run: makes `points release --date D` idempotent.
# One row per day whose dividend pool was distributed (the run is idempotent per day).
dividend_days = Table(
    "dividend_days",
    metadata,
    Column("day", Date, primary_key=True),
    Column("revenue_fen", BigInteger, nullable=False),
    Column("pool_fen", BigInteger, nullable=False),
    Column("paid_fen", BigInteger, nullable=False),
    Column("returned_fen", BigInteger, nullable=False),
    Column("run_at", DateTime, nullable=False),
)

point_release_days = Table(
    "point_release_days",
    metadata,
    Column("day", Date, primary_key=True),
    Column("released", BigInteger, nullable=False),
    Column("orders", Integer, nullable=False),
    Column("run_at", DateTime, nullable=False),
)


# --- v5: MQTT -------------------------------------------------------------------------------

# Each MQTT command once per (property, request_id): a repeat gets the same answer.
mqtt_requests = Table(
    "mqtt_requests",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("property", String(64), nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("verb", String(32), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("answer", Text),
    Column("node", String(128)),
    Column("created_at", DateTime, nullable=False),
    UniqueConstraint("property", "request_id", name="uq_mqtt_request"),
)


# --- v13: load management (cocharge/load, docs/load-management.md) --------------------------

# A site: one supply shared by its chargers (a garage, a home).
sites = Table(
    "sites",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("created_at", DateTime, nullable=False),
)

# A circuit of a site (a tree by `parent`); its limit in amperes per phase.
circuits = Table(
    "circuits",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("site", String(64), ForeignKey("sites.name", ondelete="CASCADE"), nullable=False),
    Column("parent", String(64), ForeignKey("circuits.id")),
    Column("limit_a", Float, nullable=False),
    Column("phases", Integer, nullable=False, default=3),
    # Other load on the circuit: a fixed reserve (A per phase), and where a meter reports it
    # (none | mqtt | station:ID).
    Column("reserve_a", Float, nullable=False, default=0.0),
    Column("meter", String(80), nullable=False, default="none"),
    Column("created_at", DateTime, nullable=False),
)
Index("ix_circuits_site", circuits.c.site)

# A station attached to a circuit: how it is wired (1- or 3-phase, which circuit phases in
# which order), how it charges (fast | pv | min+pv), and the profile purpose it accepted.
station_circuits = Table(
    "station_circuits",
    metadata,
    Column("station_id", String(64), ForeignKey("stations.id", ondelete="CASCADE"),
           primary_key=True),
    Column("circuit", String(64), ForeignKey("circuits.id"), nullable=False),
    Column("phases", Integer, nullable=False, default=3),
    Column("rotation", String(8), nullable=False, default="L1L2L3"),
    Column("mode", String(8), nullable=False, default="fast"),
    Column("max_current_a", Float),
    Column("profile_purpose", String(32)),
    Column("attached_at", DateTime, nullable=False),
)
Index("ix_station_circuits_circuit", station_circuits.c.circuit)


# --- v14: operations ------------------------------------------------------------------------

# Every OCPP frame in and out, per station, kept bounded (`frame_log_per_station`,
# `frame_log_days`): `cocharge logs STATION`, the station's history when it misbehaves.
# v27: a row holds a station's frames of one flush (`frames`: JSON [[ts, direction, frame],
# ...], direction in | out | note), not one frame: a saturated node wrote and pruned two rows
# per message, a third of PostgreSQL's CPU (benchmarks/fleet.py). A frame's id is its row's id *
# FRAMES_PER_ROW + `skip` + its place in the row (stations/framelog.py reads them).
FRAMES_PER_ROW = 1000
frame_chunks = Table(
    "station_frame_chunks",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("station_id", String(64), nullable=False),
    Column("first_ts", DateTime, nullable=False),
    Column("last_ts", DateTime, nullable=False),
    Column("skip", Integer, nullable=False),  # frames pruned off its start (ids stay)
    Column("size", Integer, nullable=False),  # frames in `frames`
    Column("frames", Text, nullable=False),
)
Index("ix_station_frame_chunks_station", frame_chunks.c.station_id, frame_chunks.c.id)


# --- v15: the HTTP API ----------------------------------------------------------------------

# API keys (`cocharge apikey create`): a key is "cck_<id>_<secret>"; only the SHA-256 of the
# secret is kept. `role` is operator | property | host | member; `owner` names what a
# non-operator key may see (the property's or host's account name, the member's tag).
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(16), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("role", String(16), nullable=False),
    Column("owner", String(100)),
    Column("secret_hash", String(64), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("revoked_at", DateTime),
    Column("last_used_at", DateTime),
)

# --- v16: money flows (issue 18) --------------------------------------------------------------

# Membership levels with a start and an end (`cocharge membership grant`): an OEM activation
# by VIN (the brand table in the rule table gives its months and perks) or a purchase. A VIN
# activates once; a member holds one level per brand (`brand` is "-" for a purchase).
# `quota_wh`: free energy per month while the level lasts; `free_charging`: every session in
# the level's days is free (the "free charging days" a reward rule grants).
memberships = Table(
    "memberships",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("tag", String(64), nullable=False),
    Column("level", String(32), nullable=False),
    Column("brand", String(32), nullable=False),
    Column("vin", String(17), unique=True),
    Column("source", String(16), nullable=False),  # oem | purchase | reward
    Column("ref", String(64), nullable=False, unique=True),
    Column("starts_at", DateTime, nullable=False),
    Column("ends_at", DateTime, nullable=False),
    Column("quota_wh", BigInteger, nullable=False, default=0),
    Column("free_charging", Boolean, nullable=False, default=False),
    # active | expired
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("expired_at", DateTime),
)
Index("ix_memberships_tag", memberships.c.tag, memberships.c.ends_at)

# Where a payout goes (`cocharge payout payee`): what a bank or payment provider batch needs.
payees = Table(
    "payees",
    metadata,
    Column("account", String(100), primary_key=True),  # host:NAME | property:NAME | operator:NAME
    Column("name", String(200), nullable=False),
    Column("method", String(16), nullable=False),  # bank | alipay | wechat
    Column("number", String(64), nullable=False),  # bank account (IBAN/CNAPS card no.) or wallet id
    Column("bank", String(100)),
    Column("updated_at", DateTime, nullable=False),
)

# One line of a payout run: booked (on the ledger to payable:<account>), then paid or failed.
payouts = Table(
    "payouts",
    metadata,
    Column("ref", String(64), primary_key=True),
    Column("run_date", Date, nullable=False),
    Column("account", String(100), nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("payee_name", String(200), nullable=False),
    Column("method", String(16), nullable=False),
    Column("number", String(64), nullable=False),
    Column("bank", String(100)),
    # booked | paid | failed
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("settled_at", DateTime),
    Column("note", String(200)),
)
Index("ix_payouts_run", payouts.c.run_date, payouts.c.account)
