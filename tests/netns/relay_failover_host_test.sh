#!/usr/bin/env bash
# BE failover in relay mode when the BE's host fails (link down, then the agent
# killed): relay_failover_test.sh's scenario with FAILOVER_HOW=host.
set -euo pipefail
FAILOVER_HOW=host exec bash "$(dirname "${BASH_SOURCE[0]}")/relay_failover_test.sh" "$@"
