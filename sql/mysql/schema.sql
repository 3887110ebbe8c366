-- retryhub schema for MySQL 8, MariaDB 10.6+ and TiDB.
--
-- The server creates these tables itself in an empty database on start; this file is the same
-- schema for a DBA to read, review and apply by hand (a test keeps the two identical). All
-- times are UTC with millisecond precision. Text compares byte for byte (utf8mb4_bin), so keys
-- and names are case-sensitive, as on the embedded SQLite store; MySQL still ignores trailing
-- spaces when it compares, which is why the client API refuses keys that end in one.

-- Facts about the database itself, such as the number of buckets it was set up with.
CREATE TABLE rh_meta (
  name  VARCHAR(64)  NOT NULL,
  value VARCHAR(255) NOT NULL,
  PRIMARY KEY (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Namespaces group the business services of one team or domain.
CREATE TABLE rh_namespace (
  id          BIGINT       NOT NULL AUTO_INCREMENT,
  name        VARCHAR(64)  NOT NULL,
  description VARCHAR(512) NOT NULL DEFAULT '',
  enabled     TINYINT(1)   NOT NULL,
  created_at  DATETIME(3)  NOT NULL,
  updated_at  DATETIME(3)  NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uk_namespace_name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- A group is one business service; its token signs client traffic in both directions.
CREATE TABLE rh_group (
  id                 BIGINT       NOT NULL AUTO_INCREMENT,
  namespace_id       BIGINT       NOT NULL,
  name               VARCHAR(64)  NOT NULL,
  description        VARCHAR(512) NOT NULL DEFAULT '',
  token              VARCHAR(128) NOT NULL,
  enabled            TINYINT(1)   NOT NULL,
  auto_create_scenes TINYINT(1)   NOT NULL DEFAULT 0,
  prev_token         VARCHAR(128) NOT NULL DEFAULT '',
  prev_token_until   DATETIME(3)  NULL,
  created_at         DATETIME(3)  NOT NULL,
  updated_at         DATETIME(3)  NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uk_group_name (namespace_id, name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- A scene is one retryable operation of a group, with its policy. Back-offs are JSON
-- documents, never indexed: {"strategy":"exponential","base":"1s","cap":"10m","jitter":"full"}.
CREATE TABLE rh_scene (
  id                    BIGINT       NOT NULL AUTO_INCREMENT,
  group_id              BIGINT       NOT NULL,
  name                  VARCHAR(64)  NOT NULL,
  description           VARCHAR(512) NOT NULL DEFAULT '',
  enabled               TINYINT(1)   NOT NULL,
  mode                  VARCHAR(16)  NOT NULL,              -- LOCAL, REMOTE, LOCAL_REMOTE
  local_attempts        INT          NOT NULL,
  local_backoff         TEXT         NOT NULL,
  max_attempts          INT          NOT NULL,
  backoff               TEXT         NOT NULL,
  timeout_ms            BIGINT       NOT NULL DEFAULT 0,    -- per attempt; 0 = server default
  deadline_ms           BIGINT       NOT NULL DEFAULT 0,    -- whole task; 0 = none
  routing               VARCHAR(32)  NOT NULL,              -- round_robin, random, consistent_hash, least_recently_used
  rate_limit            INT          NOT NULL DEFAULT 0,    -- replays per second; 0 = none
  callback_enabled      TINYINT(1)   NOT NULL DEFAULT 0,
  callback_max_attempts INT          NOT NULL,
  callback_backoff      TEXT         NOT NULL,
  version               BIGINT       NOT NULL DEFAULT 1,
  created_at            DATETIME(3)  NOT NULL,
  updated_at            DATETIME(3)  NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uk_scene_name (group_id, name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Retry tasks.
--   state:    1 waiting, 2 running, 3 succeeded, 4 exhausted (dead letter), 5 paused, 6 cancelled,
--             7 held (its scene paused, its group or namespace disabled, or no live instance)
--   cb_state: 0 none, 1 waiting, 2 running, 3 succeeded, 4 exhausted
-- active_key holds idem_key only while the task is active (waiting, held, running, paused), so the
-- unique key allows one active task per key and scene, and any number of ended ones.
-- claim_token is 0 unless a node holds a claim on the task (its replay or its callback).
-- Indexes, by the query they serve:
--   idx_task_due       claiming due replays, reading a claim back, finding stuck replays
--   idx_task_cb_next   the same for callbacks (a callback's read-back scans the few running)
--   uk_task_active     merging a repeated key into the active task
--   idx_task_scene     listing and bulk actions by scene and state, paged by id
--   idx_task_ended     retention of ended tasks, reading only the states it deletes
-- A replay changes state, claim_token and next_at twice (claim, then settle); every index that
-- holds one of them is rewritten each time, so only the indexes that need them hold them.
CREATE TABLE rh_task (
  id             BIGINT       NOT NULL AUTO_INCREMENT,
  group_id       BIGINT       NOT NULL,
  scene_id       BIGINT       NOT NULL,
  bucket         INT          NOT NULL,
  idem_key       VARCHAR(191) NOT NULL,
  active_key     VARCHAR(191) DEFAULT NULL,
  args           MEDIUMTEXT   NOT NULL,                     -- the call's arguments, JSON
  state          TINYINT      NOT NULL,
  attempts       INT          NOT NULL DEFAULT 0,           -- remote replays so far
  local_attempts INT          NOT NULL DEFAULT 0,           -- in-process attempts before the report
  merges         INT          NOT NULL DEFAULT 0,           -- repeated reports merged into this task
  next_at        DATETIME(3)  NOT NULL,                     -- next replay (while running: the one claimed)
  deadline_at    DATETIME(3)  DEFAULT NULL,                 -- the task's overall deadline
  claim_token    BIGINT       NOT NULL DEFAULT 0,
  run_deadline   DATETIME(3)  DEFAULT NULL,                 -- when a running claim lapses
  claimed_by     VARCHAR(64)  NOT NULL DEFAULT '',          -- the node of the last claim
  last_error     TEXT         NOT NULL,
  cb_state       TINYINT      NOT NULL DEFAULT 0,
  cb_attempts    INT          NOT NULL DEFAULT 0,
  cb_next_at     DATETIME(3)  DEFAULT NULL,
  cb_error       TEXT         NOT NULL,
  report_id      BIGINT       NOT NULL DEFAULT 0,           -- the report batch that created it
  created_at     DATETIME(3)  NOT NULL,
  updated_at     DATETIME(3)  NOT NULL,
  ended_at       DATETIME(3)  DEFAULT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uk_task_active (scene_id, active_key),
  KEY idx_task_scene (scene_id, state, id),
  KEY idx_task_due (bucket, state, claim_token, next_at),
  KEY idx_task_cb_next (bucket, cb_state, cb_next_at),
  KEY idx_task_ended (state, ended_at),
  KEY idx_task_key (idem_key),                              -- the console's search by key
  KEY idx_task_created (created_at)                         -- and by creation time
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Every replay and callback call made for a task.
--   kind:    1 replay, 2 callback
--   outcome: 1 succeeded, 2 failed, 3 timed out
CREATE TABLE rh_attempt (
  id          BIGINT      NOT NULL AUTO_INCREMENT,
  task_id     BIGINT      NOT NULL,
  kind        TINYINT     NOT NULL,
  number      INT         NOT NULL,
  node_id     VARCHAR(64) NOT NULL,
  instance_id VARCHAR(64) NOT NULL,
  started_at  DATETIME(3) NOT NULL,
  duration_ms BIGINT      NOT NULL,
  outcome     TINYINT     NOT NULL,
  error       TEXT        NOT NULL,
  PRIMARY KEY (id),
  KEY idx_attempt_task (task_id, id),
  KEY idx_attempt_started (started_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Live processes of the groups, with the executor endpoint replays are sent to.
CREATE TABLE rh_client_instance (
  id           VARCHAR(64)  NOT NULL,
  group_id     BIGINT       NOT NULL,
  executor_url VARCHAR(512) NOT NULL,
  capacity     INT          NOT NULL,
  sdk_version  VARCHAR(32)  NOT NULL,
  host         VARCHAR(255) NOT NULL,
  started_at   DATETIME(3)  NOT NULL,
  heartbeat_at DATETIME(3)  NOT NULL,
  in_flight    INT          NOT NULL DEFAULT 0,
  PRIMARY KEY (id),
  KEY idx_instance_group (group_id),
  KEY idx_instance_heartbeat (heartbeat_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Server nodes and their heartbeats.
CREATE TABLE rh_server_node (
  id           VARCHAR(64)  NOT NULL,
  address      VARCHAR(255) NOT NULL,
  version      VARCHAR(32)  NOT NULL,
  started_at   DATETIME(3)  NOT NULL,
  heartbeat_at DATETIME(3)  NOT NULL,
  PRIMARY KEY (id),
  KEY idx_node_heartbeat (heartbeat_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- One row per bucket: which node holds it, until when. The server fills it on first start.
CREATE TABLE rh_bucket_lease (
  bucket     INT         NOT NULL,
  node_id    VARCHAR(64) NOT NULL DEFAULT '',
  expires_at DATETIME(3) NOT NULL,
  PRIMARY KEY (bucket),
  KEY idx_lease_node (node_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Nonces of accepted client requests, kept for the signature window so that a captured
-- request is refused (409) on every node; every node deletes the expired ones.
CREATE TABLE rh_nonce (
  nonce      CHAR(32)    NOT NULL,
  expires_at DATETIME(3) NOT NULL,
  PRIMARY KEY (nonce),
  KEY idx_nonce_expires (expires_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- One row per named leadership (the singleton work: retention, bringing held tasks back): which
-- node holds it, until when. Renewed and expiring like the bucket leases.
CREATE TABLE rh_leader (
  name       VARCHAR(64) NOT NULL,
  node_id    VARCHAR(64) NOT NULL DEFAULT '',
  expires_at DATETIME(3) NOT NULL,
  PRIMARY KEY (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Console accounts. Only a bcrypt hash of the password is kept; token_gen is raised to end
-- every session the user has (logout, password change, signing key rotation).
CREATE TABLE rh_user (
  id            BIGINT       NOT NULL AUTO_INCREMENT,
  username      VARCHAR(64)  NOT NULL,
  password_hash VARCHAR(128) NOT NULL,
  disabled      TINYINT(1)   NOT NULL DEFAULT 0,
  token_gen     BIGINT       NOT NULL DEFAULT 1,
  created_at    DATETIME(3)  NOT NULL,
  updated_at    DATETIME(3)  NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uk_user_name (username)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- A user's role (admin, operator, viewer) in a namespace; namespace_id 0 is every namespace.
CREATE TABLE rh_user_role (
  user_id      BIGINT      NOT NULL,
  namespace_id BIGINT      NOT NULL,
  role         VARCHAR(16) NOT NULL,
  PRIMARY KEY (user_id, namespace_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- API tokens for automation: a role in a namespace (0: every namespace). Only a SHA-256 of
-- the secret is kept; last_used_at is written at most once a minute per token.
CREATE TABLE rh_api_token (
  id           BIGINT      NOT NULL AUTO_INCREMENT,
  name         VARCHAR(64) NOT NULL,
  hash         CHAR(64)    NOT NULL,
  prefix       VARCHAR(16) NOT NULL,
  namespace_id BIGINT      NOT NULL,
  role         VARCHAR(16) NOT NULL,
  created_by   VARCHAR(64) NOT NULL,
  created_at   DATETIME(3) NOT NULL,
  last_used_at DATETIME(3) NULL,
  revoked_at   DATETIME(3) NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uk_api_token_hash (hash)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Every change made through the console API, and every login, by whom, on what, with what
-- outcome. Listed newest first by id, narrowed by actor or action.
CREATE TABLE rh_audit (
  id           BIGINT       NOT NULL AUTO_INCREMENT,
  at           DATETIME(3)  NOT NULL,
  actor        VARCHAR(128) NOT NULL,
  actor_kind   VARCHAR(16)  NOT NULL,
  action       VARCHAR(64)  NOT NULL,
  target       VARCHAR(255) NOT NULL,
  namespace_id BIGINT       NOT NULL DEFAULT 0,
  detail       TEXT         NOT NULL,
  outcome      VARCHAR(16)  NOT NULL,
  status       INT          NOT NULL,
  remote       VARCHAR(64)  NOT NULL,
  PRIMARY KEY (id),
  KEY idx_audit_at (at),
  KEY idx_audit_actor (actor, id),
  KEY idx_audit_action (action, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- What happened to each scene's tasks per minute, for the dashboard: written by upserts in the
-- transactions that ingest reports and settle results, never counted from rh_task.
CREATE TABLE rh_summary_minute (
  minute       DATETIME(3) NOT NULL,
  scene_id     BIGINT      NOT NULL,
  shard        INT         NOT NULL DEFAULT 0,
  reported     BIGINT      NOT NULL DEFAULT 0,
  merged       BIGINT      NOT NULL DEFAULT 0,
  replayed     BIGINT      NOT NULL DEFAULT 0,
  succeeded    BIGINT      NOT NULL DEFAULT 0,
  failed       BIGINT      NOT NULL DEFAULT 0,
  exhausted    BIGINT      NOT NULL DEFAULT 0,
  cb_succeeded BIGINT      NOT NULL DEFAULT 0,
  cb_failed    BIGINT      NOT NULL DEFAULT 0,
  cb_exhausted BIGINT      NOT NULL DEFAULT 0,
  PRIMARY KEY (minute, scene_id, shard)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The same counts per hour: minute rows older than 30 days are rolled up into these by the
-- leader (and deleted), an hour per transaction.
CREATE TABLE rh_summary_hour (
  hour         DATETIME(3) NOT NULL,
  scene_id     BIGINT      NOT NULL,
  reported     BIGINT      NOT NULL DEFAULT 0,
  merged       BIGINT      NOT NULL DEFAULT 0,
  replayed     BIGINT      NOT NULL DEFAULT 0,
  succeeded    BIGINT      NOT NULL DEFAULT 0,
  failed       BIGINT      NOT NULL DEFAULT 0,
  exhausted    BIGINT      NOT NULL DEFAULT 0,
  cb_succeeded BIGINT      NOT NULL DEFAULT 0,
  cb_failed    BIGINT      NOT NULL DEFAULT 0,
  cb_exhausted BIGINT      NOT NULL DEFAULT 0,
  PRIMARY KEY (hour, scene_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Alerts. A channel is where messages go (email, webhook, robots); its settings, secrets
-- included, are sealed with alert.secret_key (AES-GCM) before they are stored.
CREATE TABLE rh_alert_channel (
  id           BIGINT      NOT NULL AUTO_INCREMENT,
  namespace_id BIGINT      NOT NULL,
  name         VARCHAR(64) NOT NULL,
  kind         VARCHAR(16) NOT NULL,
  settings     TEXT        NOT NULL,
  enabled      TINYINT(1)  NOT NULL,
  created_at   DATETIME(3) NOT NULL,
  updated_at   DATETIME(3) NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uk_alert_channel_name (namespace_id, name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- A rule: what to watch in a namespace (optionally narrowed to groups or scenes, JSON lists of
-- ids), its bounds (their meaning depends on the kind; durations in milliseconds), and the
-- channels to tell (a JSON list of ids).
CREATE TABLE rh_alert_rule (
  id           BIGINT       NOT NULL AUTO_INCREMENT,
  namespace_id BIGINT       NOT NULL,
  name         VARCHAR(64)  NOT NULL,
  description  VARCHAR(512) NOT NULL DEFAULT '',
  kind         VARCHAR(32)  NOT NULL,
  group_ids    TEXT         NOT NULL,
  scene_ids    TEXT         NOT NULL,
  threshold    DOUBLE       NOT NULL DEFAULT 0,
  min_volume   BIGINT       NOT NULL DEFAULT 0,
  window_ms    BIGINT       NOT NULL DEFAULT 0,
  for_ms       BIGINT       NOT NULL DEFAULT 0,
  severity     VARCHAR(16)  NOT NULL,
  channel_ids  TEXT         NOT NULL,
  repeat_ms    BIGINT       NOT NULL DEFAULT 0,
  enabled      TINYINT(1)   NOT NULL,
  created_at   DATETIME(3)  NOT NULL,
  updated_at   DATETIME(3)  NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uk_alert_rule_name (namespace_id, name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- A silence: no message of the namespace's rules (or of rule_id), about any subject (or only
-- scene_id), between starts_at and ends_at.
CREATE TABLE rh_alert_silence (
  id           BIGINT       NOT NULL AUTO_INCREMENT,
  namespace_id BIGINT       NOT NULL,
  rule_id      BIGINT       NOT NULL DEFAULT 0,
  scene_id     BIGINT       NOT NULL DEFAULT 0,
  starts_at    DATETIME(3)  NOT NULL,
  ends_at      DATETIME(3)  NOT NULL,
  reason       VARCHAR(512) NOT NULL,
  created_by   VARCHAR(128) NOT NULL,
  created_at   DATETIME(3)  NOT NULL,
  PRIMARY KEY (id),
  KEY idx_alert_silence_ns (namespace_id, ends_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Each rule's evaluation state, so that a node taking over the evaluation continues where the
-- last one left off: firing or not since when, the last message, the subjects firing (JSON),
-- the subjects waiting out a "for" duration (JSON), and the time of the last evaluation.
-- version grows with every write: of two evaluators deciding on the same state one writes.
CREATE TABLE rh_alert_state (
  rule_id      BIGINT      NOT NULL,
  firing       TINYINT(1)  NOT NULL,
  since        DATETIME(3) NULL,
  last_sent_at DATETIME(3) NULL,
  subjects     MEDIUMTEXT  NOT NULL,
  pending      TEXT        NOT NULL,
  evaluated_at DATETIME(3) NULL,
  version      BIGINT      NOT NULL DEFAULT 0,
  PRIMARY KEY (rule_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Every alert message to every channel (the history): what was sent (payload, the message as
-- JSON, kept so that a failed send is made again), and how it went. Pending and failed rows are
-- sent (again) from next_retry_at; a failed row with none is given up.
CREATE TABLE rh_alert_message (
  id            BIGINT       NOT NULL AUTO_INCREMENT,
  namespace_id  BIGINT       NOT NULL,
  rule_id       BIGINT       NOT NULL,
  rule_name     VARCHAR(64)  NOT NULL,
  kind          VARCHAR(16)  NOT NULL,
  channel_id    BIGINT       NOT NULL,
  subject       VARCHAR(255) NOT NULL,
  payload       MEDIUMTEXT   NOT NULL,
  status        VARCHAR(16)  NOT NULL,
  error         TEXT         NOT NULL,
  attempts      INT          NOT NULL DEFAULT 0,
  next_retry_at DATETIME(3)  NULL,
  created_at    DATETIME(3)  NOT NULL,
  sent_at       DATETIME(3)  NULL,
  PRIMARY KEY (id),
  KEY idx_alert_message_ns (namespace_id, id),
  KEY idx_alert_message_rule (rule_id, id),
  KEY idx_alert_message_due (status, next_retry_at),
  KEY idx_alert_message_created (created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- How many tasks each scene has in each state, for the dashboard and the alerts: every
-- statement that inserts a task, changes its state or deletes it adds the change here in its
-- own transaction, never counted from rh_task. A scene's count of a state is the sum of its
-- shards: each transaction writes its changes into one shard, so that transactions running at
-- once do not queue on one row (a shard alone may be below zero).
CREATE TABLE rh_scene_state (
  scene_id BIGINT  NOT NULL,
  shard    INT     NOT NULL,
  state    TINYINT NOT NULL,
  n        BIGINT  NOT NULL DEFAULT 0,
  PRIMARY KEY (scene_id, shard, state)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Bulk jobs: an operator's action on many tasks (a list of ids, or every task a filter matches),
-- worked through in batches by id on whichever node holds the job's lease.
--   namespace_id  the one namespace of the job's tasks; 0 when they may be in several (the
--                 filter in request lists the namespaces its creator may act in)
--   request       JSON: {"ids":[...]} or {"filter":{...}}, never indexed
--   state         running, done, cancelled, failed
--   total         what the request matched when the job was made; done counts the tasks worked
--                 through, failed those of them the action was not taken on
--   max_task_id   a filter job acts only on the tasks that existed when it was made
--   cursor_id     the last task id worked through: the job goes on above it, on any node
--   owner         the node working on it until lease_until; '' when none (a running job with no
--                 owner, or whose owner's lease passed, is taken up by the next node that looks)
CREATE TABLE rh_job (
  id           BIGINT       NOT NULL AUTO_INCREMENT,
  namespace_id BIGINT       NOT NULL DEFAULT 0,
  action       VARCHAR(16)  NOT NULL,
  request      MEDIUMTEXT   NOT NULL,
  at           DATETIME(3)  NULL,
  state        VARCHAR(16)  NOT NULL,
  total        BIGINT       NOT NULL DEFAULT 0,
  done         BIGINT       NOT NULL DEFAULT 0,
  failed       BIGINT       NOT NULL DEFAULT 0,
  max_task_id  BIGINT       NOT NULL DEFAULT 0,
  cursor_id    BIGINT       NOT NULL DEFAULT 0,
  owner        VARCHAR(64)  NOT NULL DEFAULT '',
  lease_until  DATETIME(3)  NOT NULL,
  created_by   VARCHAR(128) NOT NULL,
  created_at   DATETIME(3)  NOT NULL,
  updated_at   DATETIME(3)  NOT NULL,
  ended_at     DATETIME(3)  NULL,
  error        TEXT         NOT NULL,
  PRIMARY KEY (id),
  KEY idx_job_state (state, id),
  KEY idx_job_namespace (namespace_id, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
