#!/bin/sh
# Step 3 of the local compose network (deploy/compose.yaml): sign and publish
# the directory, now that every node enrolled and the CA recorded their key
# pins and seal keys. `ca serve` serves the new version at once. Running it
# again signs the next version (and renews the 7-day validity).
set -eu
: "${KURIER_CA_DIR:=/var/lib/kurier-ca/ca}"
export KURIER_CA_DIR
kurierctl directory sign
