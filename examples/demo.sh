#!/usr/bin/env bash
# make demo: a retryhub server on a fresh SQLite database in a temporary directory, and the
# example order service driving traffic against it for DEMO_SECONDS (30) through a flaky
# broker and partner; then a summary. Everything it starts is stopped, and the temporary
# directory removed, however it ends.
#
#   DEMO_PORT       the server's port (8080)
#   DEMO_SECONDS    seconds of traffic (30)
#   DEMO_RATE       orders a second (20)
#   DEMO_FAIL_RATE  fraction of broker and partner calls that fail (0.3)
#   DEMO_SMTP       host:port of a local SMTP catcher (Mailpit or MailHog on localhost:1025);
#                   when set, the demo creates an email channel to it and a rule on exhausted
#                   tasks through the console API (curl), so the alerts arrive there
#   GO              the go command (go)
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
PORT=${DEMO_PORT:-8080}
DURATION=${DEMO_SECONDS:-30}
RATE=${DEMO_RATE:-20}
FAIL_RATE=${DEMO_FAIL_RATE:-0.3}
# The bootstrap creates namespace "default" and group "default" with this token; the example
# signs with it. A demo value: never use a fixed token for a real group.
TOKEN=demo-group-token-0123456789
SMTP=${DEMO_SMTP:-}
# The user admin's password, for the console API calls that set up the alerts. A demo value.
ADMIN_PASSWORD=demo-admin-password

say() { printf 'demo: %s\n' "$*"; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/retryhub-demo.XXXXXX")
server_pid=
example_pid=

# stop PID NAME: SIGTERM, wait up to 20 s for it to end, then SIGKILL.
stop() {
	local pid=$1 name=$2
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 1 200); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		say "$name did not stop within 20 s; killing it"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	set +m
	stop "$example_pid" "the order service"
	if [ -n "$server_pid" ]; then
		say "stopping the server"
		stop "$server_pid" "the server"
	fi
	if [ "$rc" -ne 0 ] && [ "$rc" -lt 128 ] && [ -s "$tmp/server.log" ]; then
		say "the server's last log lines:"
		tail -n 20 "$tmp/server.log" | sed 's/^/  | /'
	fi
	rm -rf "$tmp"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# healthy: GET /healthz answers 200 (bash's /dev/tcp: no curl needed).
healthy() {
	(
		exec 3<>"/dev/tcp/127.0.0.1/$PORT" || exit 1
		printf 'GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
		IFS= read -r -t 2 status <&3 || exit 1
		[[ $status == HTTP/1.?" 200"* ]]
	) 2>/dev/null
}

# port_taken: something already accepts connections on the port.
port_taken() {
	(exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
}

say "building the server and the example"
"$GO" build -o "$tmp/retryhub-server" ./server/cmd/retryhub-server
"$GO" build -o "$tmp/orders" ./examples/cmd/orders

if port_taken; then
	say "port $PORT is taken; run again with DEMO_PORT set to a free port"
	exit 1
fi

# Job control puts the server and the example in process groups of their own: Ctrl-C reaches
# this script alone, and cleanup stops them in order (the example first, so that it can hand
# its last reports to the server and deregister).
set -m

say "starting the server on :$PORT with a new SQLite database in $tmp"
# The server refuses RETRYHUB_* variables that are not its settings; RETRYHUB_TOKEN is the
# example's, so the server does not get it.
env -u RETRYHUB_TOKEN \
	RETRYHUB_SERVER_LISTEN=":$PORT" \
	RETRYHUB_DATABASE_DSN="sqlite://$tmp/retryhub.db" \
	RETRYHUB_BOOTSTRAP_GROUP_TOKEN="$TOKEN" \
	RETRYHUB_SERVER_SHUTDOWN_TIMEOUT=10s \
	RETRYHUB_BOOTSTRAP_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
	RETRYHUB_SERVER_PUBLIC_URL="http://localhost:$PORT" \
	RETRYHUB_ALERT_EVALUATE="*/5 * * * * *" \
	"$tmp/retryhub-server" >"$tmp/server.log" 2>&1 &
server_pid=$!

for _ in $(seq 1 150); do
	healthy && break
	if ! kill -0 "$server_pid" 2>/dev/null; then
		wait "$server_pid" || true
		server_pid=
		say "the server did not start"
		exit 1
	fi
	sleep 0.2
done
healthy || { say "the server did not answer /healthz within 30 s"; exit 1; }

say "the server is up: watch http://localhost:$PORT while the demo runs (its log: $tmp/server.log)"

# api METHOD PATH [BODY]: a console API call as admin (after login sets api_token).
api_token=
api() {
	curl -sS -X "$1" "http://127.0.0.1:$PORT/api/v1/console$2" -H "Authorization: Bearer $api_token" \
		-H 'Content-Type: application/json' ${3:+-d "$3"}
}

if [ -n "$SMTP" ]; then
	command -v curl >/dev/null || { say "DEMO_SMTP needs curl"; exit 1; }
	smtp_host=${SMTP%:*}
	smtp_port=${SMTP##*:}
	api_token=$(curl -sS -X POST "http://127.0.0.1:$PORT/api/v1/console/auth/login" -H 'Content-Type: application/json' \
		-d "{\"username\":\"admin\",\"password\":\"$ADMIN_PASSWORD\"}" | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
	[ -n "$api_token" ] || { say "could not sign in to the console API"; exit 1; }
	# The bootstrap namespace "default" is namespace 1 of the new database.
	channel=$(api POST /namespaces/1/alert-channels "{\"name\":\"demo-mail\",\"kind\":\"email\",\"settings\":{\"host\":\"$smtp_host\",\"port\":$smtp_port,\"tls\":\"none\",\"from\":\"retryhub demo <retryhub@example.com>\",\"to\":[\"oncall@example.com\"]}}")
	channel_id=$(printf '%s' "$channel" | sed -n 's/^{"id":\([0-9]*\),.*/\1/p')
	[ -n "$channel_id" ] || { say "could not create the email channel: $channel"; exit 1; }
	rule=$(api POST /namespaces/1/alert-rules "{\"name\":\"demo-dead-letters\",\"kind\":\"tasks_exhausted\",\"threshold\":1,\"window\":\"5m\",\"repeat\":\"10m\",\"severity\":\"critical\",\"channel_ids\":[$channel_id]}")
	printf '%s' "$rule" | grep -q '"id":' || { say "could not create the alert rule: $rule"; exit 1; }
	if api POST "/alert-channels/$channel_id/test" | grep -q '"sent":true'; then
		say "alerts go to $SMTP: a test mail is there now; a rule mails when tasks are exhausted (evaluated every 5 s)"
	else
		say "alerts go to $SMTP, but the test mail was not sent: is the SMTP catcher running there?"
	fi
fi
say "running the order service for ${DURATION}s at $RATE orders/s, fail rate $FAIL_RATE"
echo

RETRYHUB_TOKEN=$TOKEN "$tmp/orders" \
	-server "http://127.0.0.1:$PORT" \
	-namespace default -group default \
	-listen 127.0.0.1:0 -http 127.0.0.1:0 \
	-spool "$tmp/spool" \
	-fail-rate "$FAIL_RATE" \
	-demo-duration "${DURATION}s" -demo-rate "$RATE" &
example_pid=$!
rc=0
wait "$example_pid" || rc=$?
example_pid=
if [ "$rc" -ne 0 ]; then
	say "the order service failed (exit $rc)"
	exit "$rc"
fi

if [ -n "$SMTP" ]; then
	sleep 6 # one more evaluation, for the last dead letters
	history=$(api GET "/namespaces/1/alert-messages?limit=200")
	sent=$(printf '%s' "$history" | grep -o '"status":"sent"' | wc -l || true)
	failed=$(printf '%s' "$history" | grep -o '"status":"failed"' | wc -l || true)
	say "alert messages: $sent sent to $SMTP, $failed failed (the history: GET /api/v1/console/namespaces/1/alert-messages)"
fi
