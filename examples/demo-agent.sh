#!/bin/sh
# A small example agent for `pas demo`: it claims tasks, beats with its progress and
# context use, saves a checkpoint after every step, and resumes from $PAS_CHECKPOINT when
# pas revives it. It obeys the beat's directives: `stop` ends it, `summarize` shrinks its
# context. It finds pas on $PATH, and its cell and id in $PAS_CELL and $PAS_AGENT.
#
# With the argument `mcp` it does all of this through `pas mcp` instead of the CLI: each
# call is one MCP session of JSON-RPC lines written with printf (initialize, initialized,
# tools/call), so it needs no MCP library, only a POSIX shell.
set -u
via="${1:-cli}"
label="the CLI"
[ "$via" = mcp ] && label="pas mcp"

# One MCP tool call (TOOL, ARGUMENTS as JSON); prints the reply's line, fails on a tool error.
mcp() {
  reply=$(printf '%s\n' \
    '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"demo-agent.sh","version":"1"}}}' \
    '{"jsonrpc":"2.0","method":"notifications/initialized"}' \
    "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{\"name\":\"$1\",\"arguments\":$2}}" |
    pas mcp | grep '"id":2')
  case "$reply" in
    *'"isError":false'*) echo "$reply" ;;
    *) echo "pas mcp $1: $reply" >&2; return 1 ;;
  esac
}

# A field of the tool's structured result (a string or a word).
field() {
  sed -n "s/.*\"$1\":\"\{0,1\}\([A-Za-z0-9_.-]*\).*/\1/p"
}

# claim: prints the task claimed; exit 7 when none is ready.
claim() {
  if [ "$via" = mcp ]; then
    out=$(mcp claim_task '{}') || return 1
    case "$out" in *'"claimed":false'*) return 7 ;; esac
    echo "$out" | field task_id
  else
    pas task claim "$PAS_CELL"
  fi
}

# beat PROGRESS CTX NOTE: prints the directive, if any.
beat() {
  if [ "$via" = mcp ]; then
    args="{\"note\":\"$3\""
    [ -n "$1" ] && args="$args,\"progress\":$1,\"ctx_used\":$2,\"ctx_limit\":100000"
    mcp beat "$args}" | field directive | grep -v '^null$'
  elif [ -n "$1" ]; then
    pas -q agent beat --progress "$1" --ctx-used "$2" --ctx-limit 100000 --note "$3"
  else
    pas -q agent beat --note "$3"
  fi
}

# save STATE: a checkpoint of this JSON state.
save() {
  if [ "$via" = mcp ]; then
    mcp save_checkpoint "{\"state\":$1}" >/dev/null
  else
    echo "$1" | pas checkpoint save --state - >/dev/null
  fi
}

# done TASK
finish() {
  if [ "$via" = mcp ]; then
    mcp complete_task "{\"task_id\":\"$1\"}" >/dev/null
  else
    pas task done "$PAS_CELL" "$1"
  fi
}

task=""
step=0
ctx=0
if [ -n "${PAS_CHECKPOINT:-}" ] && [ -f "$PAS_CHECKPOINT/state.json" ]; then
  task=$(sed -n 's/.*"task": *"\([^"]*\)".*/\1/p' "$PAS_CHECKPOINT/state.json")
  step=$(sed -n 's/.*"step": *\([0-9][0-9]*\).*/\1/p' "$PAS_CHECKPOINT/state.json")
  ctx=$(sed -n 's/.*"ctx": *\([0-9][0-9]*\).*/\1/p' "$PAS_CHECKPOINT/state.json")
  step=${step:-0}
  ctx=${ctx:-0}
  # Resume the task only if it is still ours.
  if [ -n "$task" ] && ! pas --json task show "$PAS_CELL" "$task" | grep -q "\"claimed_by\": \"$PAS_AGENT\""; then
    task=""
  fi
  echo "resuming from checkpoint: task=${task:-none} step=$step"
fi
while true; do
  if [ -z "$task" ]; then
    task=$(claim)
    rc=$?
    if [ "$rc" -eq 7 ]; then
      # Nothing ready: wait for dependencies, or stop when pas says the cell is done.
      [ "$(beat "" "" idle)" = stop ] && exit 0
      sleep 0.3
      continue
    fi
    [ "$rc" -eq 0 ] && [ -n "$task" ] || exit 1
    step=0
    echo "claimed $task (through $label)"
  fi
  while [ "$step" -lt 5 ]; do
    step=$((step + 1))
    ctx=$((ctx + 8000))
    reply=$(beat "0.$((step * 2 - 1))" "$ctx" "$task: step $step of 5")
    case "$reply" in
      stop) exit 0 ;;
      summarize) echo "summarizing my context (it was $ctx tokens)"; ctx=6000 ;;
    esac
    save "$(printf '{"task": "%s", "step": %d, "ctx": %d}' "$task" "$step" "$ctx")" || exit 1
    sleep 0.3
  done
  finish "$task" || exit 1
  echo "finished $task"
  task=""
done
