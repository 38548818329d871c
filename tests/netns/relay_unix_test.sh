#!/usr/bin/env bash
# The relay acceptance test (relay_test.sh) with nginx on a unix socket:
# `upstream = "unix:/..."`, `listen unix:... proxy_protocol`.
RELAY_UPSTREAM=unix exec bash "$(dirname "${BASH_SOURCE[0]}")/relay_test.sh" "$@"
