#!/usr/bin/env bash
# make demo: flush a sample spool for demo.example into a local SMTP sink.
# Needs only Go: no Exim, no root, nothing outside a fresh temporary folder.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
GO=${GO:-go}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/etrnflush-demo.XXXXXX")
SINK_PID=

stop_sink() {
	if [ -n "$SINK_PID" ]; then
		kill "$SINK_PID" 2>/dev/null || true
		wait "$SINK_PID" 2>/dev/null || true
		SINK_PID=
	fi
}
trap stop_sink EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*" | sed "s|$WORK|\$DEMO|g"; }

say "building etrnflush and the demo sink into $WORK/bin"
mkdir -p "$WORK/bin"
(cd "$ROOT" && "$GO" build -o "$WORK/bin/etrnflush" . && "$GO" build -o "$WORK/bin/sink" ./demo/sink)

# A spool as Exim's appendfile transport with use_bsmtp writes it: one file
# per host that every delivery appends to.
cp -R "$ROOT/testdata/demo/spool" "$WORK/spool"
chmod 700 "$WORK/spool"
chmod 600 "$WORK/spool/demo.example"
# A config of its own, so that one installed on this machine cannot
# interfere. The delivery status notifications for refused mail go to a
# stand-in for sendmail that files them under $WORK/bounces, never to this
# machine's MTA; the sample's old dates must not expire it.
mkdir -p "$WORK/bounces"
cat >"$WORK/bin/sendmail" <<'SH'
#!/bin/sh
# Stand-in for sendmail: keeps the DSN that etrnflush hands over.
for a; do rcpt=$a; done
n=$(ls "$(dirname "$0")/../bounces" | wc -l)
cat >"$(dirname "$0")/../bounces/dsn-$n-to-$rcpt.eml"
SH
chmod 755 "$WORK/bin/sendmail"
cat >"$WORK/etrnflush.toml" <<EOF
sendmail = ["$WORK/bin/sendmail", "-i", "-f", "<>", "--"]
max_age = "3650d"
EOF
unset ETRNFLUSH_CONFIG

say "starting the sink (it plays demo.example's mail server)"
"$WORK/bin/sink" -listen 127.0.0.1:0 -addr-file "$WORK/sink.addr" -dir "$WORK/received" >"$WORK/sink.log" 2>&1 &
SINK_PID=$!
for _ in $(seq 1 100); do
	[ -s "$WORK/sink.addr" ] && break
	if ! kill -0 "$SINK_PID" 2>/dev/null; then
		cat "$WORK/sink.log" >&2
		echo "demo: the sink did not start" >&2
		exit 1
	fi
	sleep 0.1
done
ADDR=$(cat "$WORK/sink.addr")
echo "sink listening on $ADDR"
echo "it refuses recipients named reject550* (550) and defers defer451* (451)"

EF=("$WORK/bin/etrnflush" -c "$WORK/etrnflush.toml")

say "what is in the spool (--dry-run: connects nowhere, changes nothing)"
show etrnflush --dry-run --spool "$WORK/spool/demo.example" demo.example
"${EF[@]}" --log stderr --dry-run --spool "$WORK/spool/demo.example" demo.example

say "flushing demo.example"
show etrnflush --log stderr --spool "$WORK/spool/demo.example" --to "$ADDR" --tls none --helo mx.isp.example demo.example
set +e
"${EF[@]}" --log stderr --spool "$WORK/spool/demo.example" --to "$ADDR" --tls none --helo mx.isp.example demo.example
rc=$?
set -e
case $rc in
0) echo "exit status 0: nothing left" ;;
75) echo "exit status 75 (EX_TEMPFAIL): something was deferred and is kept for the next run" ;;
*) echo "exit status $rc: unexpected" ;;
esac

sleep 0.2 # let the sink print its last line
stop_sink
say "what the sink saw"
cat "$WORK/sink.log"

say "what is left in the spool for the next run"
show etrnflush --dry-run --spool "$WORK/spool/demo.example" demo.example
"${EF[@]}" --log stderr --dry-run --spool "$WORK/spool/demo.example" demo.example

say "where things are"
echo "received messages:   $WORK/received/"
echo "spool directory:     $WORK/spool/"
(cd "$WORK/spool" && find . -mindepth 1 | sort | sed 's|^\./|                       |')
echo "failed (5xx) copies: $WORK/spool/.etrnflush-demo.example.failed/ (gone once bounced)"
echo "bounces (DSNs):      $WORK/bounces/"
ls "$WORK/bounces" | sed 's|^|                       |'
echo "remove it all with:  rm -rf $WORK"
if [ "$rc" -ne 0 ] && [ "$rc" -ne 75 ]; then
	exit "$rc"
fi
