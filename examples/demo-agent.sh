#!/bin/sh
# A small example agent for `pas demo`: it claims tasks, beats with its progress and
# context use, saves a checkpoint after every step, and resumes from $PAS_CHECKPOINT when
# pas revives it. It obeys the beat's directives: `stop` ends it, `summarize` shrinks its
# context. It finds pas on $PATH, and its cell and id in $PAS_CELL and $PAS_AGENT.
set -u
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
    task=$(pas task claim "$PAS_CELL")
    rc=$?
    if [ "$rc" -eq 7 ]; then
      # Nothing ready: wait for dependencies, or stop when pas says the cell is done.
      [ "$(pas -q agent beat --note idle)" = stop ] && exit 0
      sleep 0.3
      continue
    fi
    [ "$rc" -eq 0 ] || exit 1
    step=0
    echo "claimed $task"
  fi
  while [ "$step" -lt 5 ]; do
    step=$((step + 1))
    ctx=$((ctx + 8000))
    reply=$(pas -q agent beat --progress "0.$((step * 2 - 1))" --ctx-used "$ctx" --ctx-limit 100000 --note "$task: step $step of 5")
    case "$reply" in
      stop) exit 0 ;;
      summarize) echo "summarizing my context (it was $ctx tokens)"; ctx=6000 ;;
    esac
    printf '{"task": "%s", "step": %d, "ctx": %d}\n' "$task" "$step" "$ctx" | pas checkpoint save --state - >/dev/null
    sleep 0.3
  done
  pas task done "$PAS_CELL" "$task"
  echo "finished $task"
  task=""
done
