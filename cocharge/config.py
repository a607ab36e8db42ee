"""Operator-tunable settings of the gateway, with the product's defaults (SPEC §2)."""

from __future__ import annotations

from dataclasses import dataclass, field

from cocharge.settlement.overstay import IdleFeeRule


@dataclass(frozen=True)
class GatewaySettings:
    """Every number the gateway runs by; `cocharge serve` exposes the ones operators change."""

    host: str = "0.0.0.0"
    port: int = 9000
    operator_host: str = "127.0.0.1"
    operator_port: int = 9001
    auto_register: bool = False
    heartbeat_interval_s: int = 300
    # How long a Pending/Rejected station waits before it boots again.
    boot_retry_interval_s: int = 60
    # Time a station has to answer one command, including the wait for its previous one.
    call_timeout_s: float = 30.0
    # Largest accepted frame; bigger ones close only that connection (code 1009).
    max_frame_bytes: int = 64 * 1024
    # Meter samples are written in batches: at most this many rows per commit ...
    sample_batch_rows: int = 5000
    # ... gathered for at most this long after the first one arrives.
    sample_batch_linger_s: float = 0.0
    # Used to judge meter readings when a station was registered without --max-power-kw.
    default_max_power_w: int = 350_000
    # A session whose average power exceeds max power by this factor is flagged, not billed.
    misread_power_factor: float = 1.1
    # Energy a session may show regardless of duration (meter resolution, rounding).
    misread_slack_wh: int = 100
    ws_ping_interval_s: float | None = 60.0
    # The per-station OCPP log (`cocharge logs STATION`): each station's last this many frames
    # (0: none kept), none older than frame_log_days; written in a batch every flush_s.
    frame_log_per_station: int = 1000
    frame_log_days: int = 7
    frame_log_flush_s: float = 1.0
    # GET /metrics (Prometheus) and /healthz on operator_host at this port; None = off.
    metrics_port: int | None = None
    # The HTTP API and the web console (docs/api.md, docs/console.md); None = off. On
    # 127.0.0.1 by default: put a TLS reverse proxy in front to offer it to other hosts.
    api_host: str = "127.0.0.1"
    api_port: int | None = 8080
    # A session still active on a connector its charger reports Available this long after (the
    # time a charger's queued StopTransaction/TransactionEvent needs to arrive after a boot)
    # is closed as stale and settled on the energy known (docs/operations.md).
    stale_session_grace_s: float = 180.0
    # --- fleet scale (docs/operations.md) ---
    # When each station last spoke is written out this often (one batch for all).
    last_seen_flush_s: float = 30.0
    # Registered stations are kept in memory and re-read this often (CLI / other nodes' changes).
    directory_refresh_s: float = 30.0
    # scrypt password checks running at once (each costs 16 MiB and tens of ms of CPU), in
    # all and per remote address; further checks from an address wait in line, at most
    # password_queue_per_address of them (gateway/guard.py): 200 checks of ~50 ms, 4 at a
    # time, are done within 3 s, well inside the 10 s a handshake may take.
    password_checks_at_once: int = 4
    password_queue_per_address: int = 200
    # Handshakes in progress (WebSocket opening handshake until the first message is
    # answered) beyond which a new connection gets HTTP 503 with Retry-After.
    max_handshakes: int = 20_000
    retry_after_s: int = 30
    # The heartbeat and boot-retry intervals given at boot vary by this fraction, so that the
    # stations of a reconnect storm do not keep arriving together.
    interval_jitter: float = 0.1
    # SQLite: the WAL is copied into the database this often, beside the commits (not in them).
    wal_checkpoint_s: float = 1.0
    # A full pass of Python's cycle collector (a pause of ~0.5 us per object) runs this often,
    # and never on its own in between (cocharge/gateway/heap.py).
    gc_full_collection_s: float = 3600.0
    # Pending TCP connections the kernel queues for us (capped by net.core.somaxconn).
    listen_backlog: int = 4096
    # Several processes share the OCPP and upload ports (SO_REUSEPORT): `serve --workers N`.
    reuse_port: bool = False

    # --- input you cannot trust (docs/security.md, docs/ocpp-errors.md) ---
    # A charger's timestamp is used when it lies between this long before and clock_future_s
    # after the moment it arrived, otherwise the arrival time (cocharge/gateway/clock.py).
    clock_past_s: float = 31 * 86400
    clock_future_s: float = 900
    # The operator's quirks file (TOML) beside the built-in quirks; None = built-in only.
    quirks_file: str | None = None
    # Password guessing (cocharge/gateway/guard.py): distinct wrong passwords a station or an
    # address may send without delay; each further one blocks it for a delay doubling from
    # auth_delay_s up to auth_delay_max_s; at the lockout count, for auth_lockout_s.
    auth_station_free: int = 3
    auth_station_lockout: int = 10
    auth_address_free: int = 10
    auth_address_lockout: int = 50
    auth_delay_s: float = 1.0
    auth_delay_max_s: float = 60.0
    auth_lockout_s: float = 900.0
    # A station or address without a wrong password for this long starts afresh.
    auth_forget_s: float = 3600.0
    # A blocked address's attempt is answered (429) only after this long, up to this many
    # held at once per address: a guesser's connections cost it time, not us CPU.
    auth_tarpit_s: float = 5.0
    auth_tarpit_per_address: int = 256
    # Refuse stations that have no password (HTTP 401) instead of only warning about them.
    require_password: bool = False
    # A new connection for a station without a password replaces its live connection only if
    # the live one does not answer a ping within takeover_ping_s (or this is set).
    allow_takeover: bool = False
    # Load balancers / reverse proxies whose PROXY header (v1 or v2) or X-Forwarded-For names
    # the charger's real address: addresses or networks, comma-separated (gateway/proxy.py).
    trusted_proxies: str | None = None
    # The platform's time zone: every time the console shows and every time typed into it.
    time_zone: str = "Asia/Shanghai"
    # The console's address as drivers' phones reach it (the QR codes on the connectors).
    console_url: str | None = None
    takeover_ping_s: float = 5.0

    # --- diagnostics and logs (cocharge/gateway/uploads.py) ---
    # Where stations upload the files asked for; the URL they are given (default: http://
    # the host name the station connected to, this port).
    upload_port: int = 9002
    upload_url: str | None = None
    upload_max_bytes: int = 20 * 1024 * 1024
    upload_timeout_s: float = 300.0

    # A station in a firmware campaign that reports no progress for this long has failed
    # that attempt.
    firmware_timeout_s: float = 3600.0

    # --- certificates and security profile 3 (cocharge/stations/certificates.py) ---
    # The operator's CA (`cocharge ca init`): signs the stations' CSRs; None = none.
    ca_dir: str | None = None
    # A node's lease (several nodes on one database): renewed every third of it; a node that
    # died without closing (kill -9, power loss) shows its stations offline once it ends.
    node_lease_s: float = 15.0
    # ISO 15118 contract certificates (Plug & Charge): the roots whose OCSP answers we
    # believe (V2G and mobility-operator roots, a PEM file; our own CA's are always
    # trusted), and how long a responder may take (stations/ocsp.py).
    contract_roots: str | None = None
    ocsp_timeout_s: float = 5.0
    # More CA certificates (PEM) whose client certificates are accepted (an external CA).
    client_ca_file: str | None = None
    cert_valid_s: int = 365 * 86400
    # A certificate this close to its end is renewed (the station is asked for a new CSR),
    # asked again after cert_renew_retry_s if no new one came; checked every cert_check_s.
    cert_renew_before_s: int = 30 * 86400
    cert_renew_retry_s: int = 3600
    cert_check_s: float = 3600.0
    # A TLS listener beside the plain one (`serve --port` plain, this port wss://), so that
    # stations can move from profile 1 to 2 or 3; None = the one port (TLS if configured).
    tls_port: int | None = None
    # The wss:// URL stations moved to profile 2 or 3 are given (default: the host they
    # connected to, tls_port, their path).
    tls_url: str | None = None

    # --- the price at the charger (docs/operations.md) ---
    # A running 2.0.1 session's cost is sent (CostUpdated) at most this often as its meter
    # values arrive; 0 = never. The Ended answer always carries the settled total.
    cost_update_s: float = 60.0
    # 1.6 has no CostUpdated: the vendorId of the DataTransfer (messageId CostUpdated) that
    # carries it to 1.6 stations with a display; None = none sent.
    cost_data_transfer: str | None = None
    currency: str = "CNY"
    # The language of what the central system writes on chargers' displays (the host's
    # price, the next booking) and of a member's personal messages when the member chose
    # none (`member update --lang`): zh | en. Sent as messageContent.language (2.0.1, 2.1).
    display_language: str = "zh"
    # 2.1 local cost calculation: the host's tariff is sent to a 2.1 charger that has
    # TariffCostCtrlr enabled (SetDefaultTariff per EVSE, re-checked this often), and the
    # charger's own cost of a session may differ from ours by this much (fen) before the
    # session is flagged for review; our settlement is what is billed either way.
    tariff_sync_s: float = 60.0
    charger_cost_tolerance_fen: int = 1
    # 2.1 payment at the charger (C24): the payment page a driver without an account opens
    # from the QR code each EVSE shows while idle ({station} and {evse} are filled in);
    # None: no QR code is shown.
    payment_page_url: str | None = None

    # --- local authorization lists (cocharge/stations/local_list.py) ---
    # Each share-managed station's list is compared with its rules and members this often.
    local_list_sync_s: float = 60.0
    # A station whose rules admit more members than this gets no local list.
    local_list_max: int = 1000

    # --- sharing control (SPEC §2) ---
    # How often bookings, share locks, deadlines and queued-command expiry are checked.
    control_interval_s: float = 2.0
    # How long a locked connector stays open for the member who authorized there.
    unlock_hold_s: int = 300
    # Price per kWh when the owner set none (budget cutoffs turn money into energy with it).
    price_fen_per_kwh: int = 150
    # A session starts only when the member may spend at least this (wallet + credit line -
    # owed; settlement/funds.py), or has free quota left; 0 turns the check off.
    start_minimum_fen: int = 100
    # Signed ledger checkpoints (settlement/checkpoints.py): the platform's Ed25519 key, kept
    # outside the database (made on first use); none: the node makes none. Each checkpoint
    # goes to the database, the witness file (default: the key's file + .checkpoints.jsonl)
    # and, with a broker, retained to <prefix>/ledger/checkpoint.
    ledger_key_file: str | None = None
    checkpoint_file: str | None = None
    checkpoint_interval_s: float = 3600.0
    checkpoint_every_transfers: int = 1000
    # TxProfiles are in amperes: power = A x voltage x phases.
    nominal_voltage_v: int = 230
    phases: int = 3
    # Power assumed for a station registered without --max-power-kw (22 kW AC wallbox).
    assumed_station_power_w: int = 22_000
    # An energy limit counts as reached within this fraction (meter resolution, ramp-up).
    cutoff_tolerance: float = 0.005
    # A TxProfile's 0 A point is moved later only this long after it passed (clock skew).
    cutoff_extend_margin_s: int = 10
    # Overstay: grace, then fen per minute, capped.
    idle_fee: IdleFeeRule = field(default_factory=IdleFeeRule)
    # How long a command for an offline station waits for it (`cocharge remote --expires`).
    command_queue_s: int = 3600
    # MQTT (`serve --mqtt`): mqtt://[user:pass@]host[:port][/prefix]; None = no broker.
    mqtt_url: str | None = None
    mqtt_queue_size: int = 10_000       # messages waiting for the broker; more are dropped
    mqtt_meter_interval_s: float = 1.0  # at most one live meter message per connector this often

    # --- load management (cocharge/load, docs/load-management.md) ---
    # Every site is allocated again at least this often (and at once on a session start or
    # end, or a meter moving by load_meter_delta_a); sites and circuits re-read this often.
    load_period_s: float = 15.0
    load_reload_s: float = 30.0
    load_meter_delta_a: float = 2.0
    # An increase is written only if it is this much and the connector's last write is this
    # old (flash wear); decreases go out at once.
    load_min_change_a: float = 1.0
    load_min_interval_s: float = 10.0
    # After writing decreases, increases wait this long: an EV has 5 s to follow a lower
    # limit (IEC 61851-1), so the circuit is never over while it does.
    load_settle_s: float = 5.0
    # An allocation profile lasts this long unless renewed: a station cut off from us falls
    # back to its safe share (the failsafe) within this time.
    load_profile_valid_s: int = 600
    # PV mode: the surplus must cover the minimum current this long to start charging, and
    # stay under it this long to pause.
    pv_enable_delay_s: float = 60.0
    pv_disable_delay_s: float = 180.0
