-- +goose Up
-- Plans: reviewed bulk operations. Times are unix microseconds; JSON is
-- stored as text so both engines read it the same way.
CREATE TABLE plans (
    id             TEXT PRIMARY KEY,
    action         TEXT NOT NULL,
    kind           TEXT NOT NULL,
    reason         TEXT NOT NULL,
    requester      TEXT NOT NULL,
    spec           TEXT NOT NULL,          -- JSON of Spec: waves, bake, gates, restore moment
    status         TEXT NOT NULL,
    report         TEXT NOT NULL,          -- JSON of the last dry-run Report
    report_hash    TEXT NOT NULL,
    required_role  TEXT NOT NULL,
    approved_by    TEXT NOT NULL,
    approved_role  TEXT NOT NULL,
    approved_hash  TEXT NOT NULL,
    approved_at    BIGINT NOT NULL,
    wave           BIGINT NOT NULL,        -- the wave being run or gated
    phase          TEXT NOT NULL,          -- steps, gate, promote
    gate_until     BIGINT NOT NULL,        -- the bake ends
    promoted       BIGINT NOT NULL,        -- waves whose gate a person passed: gates below this one
    runner         TEXT NOT NULL,          -- "host:pid" holding the run lease
    lease_until    BIGINT NOT NULL,
    last_progress  BIGINT NOT NULL,
    resumed_at     BIGINT NOT NULL,
    note           TEXT NOT NULL,          -- why it paused, aborted or was refused
    created        BIGINT NOT NULL,
    updated        BIGINT NOT NULL
);
CREATE INDEX plans_status ON plans (status, created);

-- One row per target, in the order the plan runs them.
CREATE TABLE plan_targets (
    plan_id       TEXT NOT NULL REFERENCES plans (id),
    pos           BIGINT NOT NULL,
    target        TEXT NOT NULL,           -- typed: site:42, app:42/tracker/insight
    tenant        TEXT NOT NULL,
    wave          BIGINT NOT NULL,
    status        TEXT NOT NULL,           -- pending, running, done, failed, skipped, rolled_back
    runner        TEXT NOT NULL,           -- the runner that claimed it ("host:pid")
    op_id         TEXT NOT NULL,
    undo_op_id    TEXT NOT NULL,
    restore_test  TEXT NOT NULL,           -- "", passed, failed
    verify        TEXT NOT NULL,           -- "", passed, or what did not match
    digest        TEXT NOT NULL,           -- JSON product -> table -> row hash before the step
    error         TEXT NOT NULL,
    started       BIGINT NOT NULL,
    finished      BIGINT NOT NULL,
    PRIMARY KEY (plan_id, pos)
);
CREATE INDEX plan_targets_tenant ON plan_targets (tenant);
CREATE INDEX plan_targets_op ON plan_targets (op_id);

-- Every gate decision between waves.
CREATE TABLE plan_gates (
    plan_id  TEXT NOT NULL REFERENCES plans (id),
    wave     BIGINT NOT NULL,
    at       BIGINT NOT NULL,
    result   TEXT NOT NULL,                -- pass, fail, inconclusive, promoted
    checks   TEXT NOT NULL                 -- JSON []Check
);
CREATE INDEX plan_gates_plan ON plan_gates (plan_id, wave);

-- The freeze: one row, present while Lifeline is frozen.
CREATE TABLE plan_freeze (
    id      BIGINT PRIMARY KEY,
    reason  TEXT NOT NULL,
    actor   TEXT NOT NULL,
    since   BIGINT NOT NULL
);

-- +goose Down
DROP TABLE plan_freeze;
DROP TABLE plan_gates;
DROP TABLE plan_targets;
DROP TABLE plans;
