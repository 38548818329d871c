#!/usr/bin/env bash
# CARD with forward = "tunnel" (issue 16 with issue 15's tunnel): card_test.sh's checks,
# the entries reaching the owners by IPIP (encapsulated and unwrapped in BPF) instead of
# by MAC. The nodes share a segment here; what makes them tunnel is the file.
set -euo pipefail
CARD_FORWARD=tunnel exec bash "$(dirname "${BASH_SOURCE[0]}")/card_test.sh" "$@"
