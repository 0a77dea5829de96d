#!/bin/sh
# Step 1 of the local compose network (deploy/compose.yaml), the operator's
# part of `kurierctl demo`: create the network CA, add the members, and
# write what each node needs into $BOOTSTRAP_DIR (the "bootstrap" volume):
# the root fingerprint, one-time enrolment tokens, the relays' cluster key and
# the endpoint servers' API tokens. It does nothing if the CA exists.
#
# The CA keys are NOT encrypted (--insecure-unencrypted-key): this network is
# for trying Kurier on one machine. For a real CA see docs/operations.md.
set -eu
umask 077

: "${KURIER_CA_DIR:=/var/lib/kurier-ca/ca}"
export KURIER_CA_DIR
out=${BOOTSTRAP_DIR:-/etc/kurier}
network=${NETWORK:-kurier.test}
ca_name=${CA_NAME:-ca}
public=${RELAY_PUBLIC_PORT:-443}
pairing=${RELAY_PAIRING_PORT:-4443}
control=${RELAY_CONTROL_PORT:-4443}
control_tcp=${RELAY_CONTROL_TCP_PORT:-4444}
gossip=${RELAY_GOSSIP_PORT:-7946}

if [ -f "$KURIER_CA_DIR/ca.json" ]; then
	echo "bootstrap: a CA exists in $KURIER_CA_DIR; nothing to do"
	exit 0
fi

kurierctl ca init --network "$network" --dns-name "$ca_name" --dns-name localhost --insecure-unencrypted-key --json >"$out/ca-init.json"
sed -n 's/^ *"root_fingerprint": "\([0-9a-f]*\)".*/\1/p' "$out/ca-init.json" >"$out/fingerprint"

# add NAME FLAGS...: record the member and keep its one-time token.
add() {
	name=$1
	shift
	kurierctl member add "$name" --json "$@" >"$out/$name.member.json"
	sed -n 's/^ *"token": "\([^"]*\)".*/\1/p' "$out/$name.member.json" >"$out/$name.token"
	rm "$out/$name.member.json"
	echo "bootstrap: added $name"
}

# The relays' addresses as clients and proxies reach them: the compose
# service names, or RELAY_1_HOST and RELAY_2_HOST.
for n in 1 2; do
	eval "host=\${RELAY_${n}_HOST:-relay-$n}"
	add "relay-$n" --role relay --display-name "Relay $n" \
		--relay-public "$host:$public" --relay-pairing "$host:$pairing" \
		--relay-control "$host:$control" --relay-control-tcp "$host:$control_tcp" \
		--relay-gossip "$host:$gossip"
done
add hd-1 --role health-office --display-name "Gesundheitsamt Musterstadt" --service index-cases
add vendor-a --role provider --display-name "Vendor A" --service guest-lists

# The cluster key every relay shares (base64), and each endpoint server's
# API token (what the local software sends as Authorization: Bearer).
head -c 32 /dev/urandom | base64 >"$out/gossip.key"
for m in hd-1 vendor-a; do
	head -c 32 /dev/urandom | base64 >"$out/$m.api-token"
done
echo "bootstrap: network $network, root fingerprint $(cat "$out/fingerprint")"
