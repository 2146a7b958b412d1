#!/usr/bin/env bash
# A short pas session in a temporary missions root: a cell, agents, tasks, validation.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet
pas() { echo "\$ pas $*" >&2; ./target/debug/pas "$@"; }
export PAS_ROOT
PAS_ROOT=$(mktemp -d /tmp/pas-quickstart.XXXXXX)
echo "missions root: $PAS_ROOT"
cell=$(pas cell create --name "Quickstart mission" --max-agents 4)
pas agent add "$cell" lead --role lead --cap planning
pas agent add "$cell" worker --cap coding
pas task add "$cell" design --title "Design the change" --assign lead --priority high
pas task add "$cell" build --title "Build it" --dep design
pas cell list
pas agent list "$cell"
pas task list "$cell"
pas validate
