-- vm.sqlite as written by the agent of commit 4243b3b (user_version 0); made by tests/state_files/make.py
BEGIN TRANSACTION;
CREATE TABLE actions (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    native_id TEXT NOT NULL,
    action TEXT NOT NULL,
    paid_by TEXT NOT NULL
);
CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL,
    sent INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE buckets (
    endpoint TEXT NOT NULL,
    native_id TEXT NOT NULL,
    day INTEGER NOT NULL,
    signal TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (endpoint, native_id, day, signal, bucket)
) WITHOUT ROWID;
INSERT INTO "buckets" VALUES('lab','vm-42',20777,'cpu',1,1);
CREATE TABLE days (
    endpoint TEXT NOT NULL,
    native_id TEXT NOT NULL,
    day INTEGER NOT NULL,
    signal TEXT NOT NULL,
    peak REAL NOT NULL,
    samples INTEGER NOT NULL,
    PRIMARY KEY (endpoint, native_id, day, signal)
) WITHOUT ROWID;
INSERT INTO "days" VALUES('lab','vm-42',20777,'cpu',1.5,1);
CREATE TABLE decisions (
    decision_id TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    native_id TEXT NOT NULL,
    state TEXT NOT NULL,
    at TEXT NOT NULL,
    document TEXT NOT NULL,
    outcome TEXT
);
CREATE TABLE marks (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO "marks" VALUES('last_report','2026-11-20T09:00:00+00:00');
CREATE TABLE never_act (
    endpoint TEXT NOT NULL,
    vm TEXT NOT NULL,
    reason TEXT NOT NULL,
    added_at TEXT NOT NULL,
    PRIMARY KEY (endpoint, vm)
);
INSERT INTO "never_act" VALUES('lab','dns-01','the lab''s DNS','2026-11-20T09:00:00+00:00');
CREATE TABLE notices (
    notice_id TEXT PRIMARY KEY,
    decision_id TEXT NOT NULL UNIQUE,
    endpoint TEXT NOT NULL,
    native_id TEXT NOT NULL,
    recipient TEXT,
    sent_at TEXT,
    due_at TEXT NOT NULL,
    answer TEXT,
    answered_at TEXT,
    acted_at TEXT,
    error TEXT
);
INSERT INTO "notices" VALUES('n-1','d-1','lab','vm-42','owner@example.org','2026-11-20T09:00:00+00:00','2026-11-23T09:00:00+00:00',NULL,NULL,NULL,NULL);
CREATE TABLE places (
    endpoint TEXT NOT NULL,
    kind TEXT NOT NULL,
    native_id TEXT NOT NULL,
    record TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    PRIMARY KEY (endpoint, kind, native_id)
);
CREATE TABLE sent_records (
    endpoint TEXT NOT NULL,
    native_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (endpoint, native_id)
);
CREATE TABLE used_links (
    nonce TEXT PRIMARY KEY,
    used_at TEXT NOT NULL
);
INSERT INTO "used_links" VALUES('nonce-1','2026-11-20T09:00:00+00:00');
CREATE TABLE vms (
    endpoint TEXT NOT NULL,
    native_id TEXT NOT NULL,
    name TEXT NOT NULL,
    power_state TEXT NOT NULL,
    host TEXT,
    record TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    last_active_at TEXT,
    off_since TEXT,
    gone_at TEXT,
    quiet_from TEXT,
    evaluation TEXT,
    PRIMARY KEY (endpoint, native_id)
);
INSERT INTO "vms" VALUES('lab','vm-42','build-01','on','esx-1','{"cpus": 2, "datastores": ["ds1"], "host": "esx-1", "identifiers": {"bios_uuid": "4231-aa", "ec2_instance_id": null, "instance_uuid": null, "macs": ["00:50:56:aa:bb:cc"]}, "memory_mb": 4096, "name": "build-01", "native_id": "vm-42", "power_state": "on", "tags": {}, "tools_running": false}','2026-11-20T09:00:00+00:00','2026-11-20T09:00:00+00:00',NULL,NULL,NULL,NULL,NULL);
CREATE INDEX decisions_by_vm ON decisions (endpoint, native_id, at);
CREATE INDEX actions_by_time ON actions (at);
COMMIT;
