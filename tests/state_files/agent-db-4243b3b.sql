-- agent.db as written by the agent of commit 4243b3b (user_version 0); made by tests/state_files/make.py
BEGIN TRANSACTION;
CREATE TABLE features (
    link TEXT NOT NULL,
    module TEXT NOT NULL,
    features TEXT NOT NULL,
    PRIMARY KEY (link, module)
);
INSERT INTO "features" VALUES('default','vm','["notices"]');
CREATE TABLE journal (
    link TEXT NOT NULL,
    command_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    job_id TEXT NOT NULL,
    name TEXT NOT NULL,
    args TEXT NOT NULL,
    state TEXT NOT NULL,
    result_code TEXT,
    detail TEXT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    reported INTEGER NOT NULL DEFAULT 0
);
INSERT INTO "journal" VALUES('default','c-1',5,'j-1','noop.echo','{"say": "hi"}','done','ok','said hi','2026-12-03T17:44:36.592952+00:00','2026-12-03T17:44:36.596898+00:00',0);
CREATE TABLE links (
    name TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    site_id TEXT NOT NULL,
    token_url TEXT NOT NULL,
    key_file TEXT NOT NULL,
    max_flow TEXT NOT NULL,
    flow_mode TEXT NOT NULL,
    ca_bundle TEXT,
    last_seq INTEGER NOT NULL DEFAULT 0,
    docked_at TEXT NOT NULL,
    last_contact_at TEXT
);
INSERT INTO "links" VALUES('default','https://cloud.example','0b5c4d1e-0000-4000-8000-000000000001','0b5c4d1e-0000-4000-8000-000000000002','0b5c4d1e-0000-4000-8000-000000000003','https://cloud.example/agent/v1/token','/tmp/tmphajifarf/files/state/default.key','metadata','config',NULL,7,'2026-11-20T09:00:00+00:00','2026-11-20T09:00:00+00:00');
CREATE TABLE policies (
    link TEXT NOT NULL,
    policy_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    document TEXT NOT NULL,
    PRIMARY KEY (link, policy_id)
);
INSERT INTO "policies" VALUES('default','p-1','vm-lifecycle','lab',3,'{"idle_days": 14}');
COMMIT;
