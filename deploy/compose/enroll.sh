#!/bin/sh
# Step 2 of the local compose network (deploy/compose.yaml), once per node:
# `kurier enroll` with the node's one-time token, into the node's state
# volume ($KURIER_DIR). The keys are made here and never leave the volume.
# It does nothing if the node is enrolled, and waits (30 tries) for the CA.
set -eu
umask 077

name=$1
state=${KURIER_DIR:-/var/lib/kurier}
in=${BOOTSTRAP_DIR:-/etc/kurier}
ca=${CA_URL:-https://ca:9000}

if [ -f "$state/state.json" ]; then
	echo "enroll: $name is enrolled in $state; nothing to do"
	exit 0
fi
tries=0
until kurier enroll --ca "$ca" --fingerprint "$(cat "$in/fingerprint")" --token-file "$in/$name.token" --dir "$state"; do
	tries=$((tries + 1))
	if [ "$tries" -ge 30 ]; then
		echo "enroll: $name: giving up" >&2
		exit 1
	fi
	sleep 1
done
