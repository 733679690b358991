#!/bin/sh
# smtp_etrn_command target of etrn.conf:
#   etrn-hook.sh ETRNFLUSH STATE_DIR ARGUMENT
# Exim runs it with an empty environment and its stdout/stderr on /dev/null,
# and ignores its exit status, so keep what etrnflush said and how it exited:
# one line "<status><TAB><argument><TAB><output on one line>" per call in
# STATE_DIR/calls.log (one write per call, so parallel hooks do not mix).
PATH=/usr/bin:/bin
bin=$1 dir=$2 arg=$3
out=$("$bin" -c "$dir/etrnflush.toml" "$arg" 2>&1)
rc=$?
out=$(printf '%s' "$out" | tr '\t\n' '  ')
printf '%s\t%s\t%s\n' "$rc" "$arg" "$out" >> "$dir/calls.log"
