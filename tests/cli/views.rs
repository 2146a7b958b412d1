//! The fleet views (`pas status` as a table, `pas check`) keep their exact text: the
//! expected outputs below were made by the views as they were before they were streamed
//! (comfy-table rendering every cell's table), on a root whose output does not depend on
//! the time: no agent ever beat, and no cell has a timeout.

use crate::harness::Root;

/// Two cells written by hand: agents idle, paused, failed and unreadable, a task name in
/// wide characters, one on two lines, a paused cell.
const ROOT_SCRIPT: &str = r#"set -e
cell() { mkdir -p "$ROOT/$1/agents" "$ROOT/$1/tasks" "$ROOT/$1/checkpoints" "$ROOT/$1/logs" "$ROOT/$1/artifacts" "$ROOT/$1/config"; }
A=11111111-1111-4111-8111-111111111111
B=22222222-2222-4222-8222-222222222222
cell $A
cell $B
cat > "$ROOT/$A/cell.json" << 'END'
{"cell_id": "11111111-1111-4111-8111-111111111111", "mission_name": "Views — golden", "created_at": "2026-01-01T00:00:00Z", "created_by": "admin", "status": "active", "isolation_level": "level_1", "max_agents": 10, "timeout": null, "policies": {}}
END
cat > "$ROOT/$B/cell.json" << 'END'
{"cell_id": "22222222-2222-4222-8222-222222222222", "mission_name": "Paused one", "created_at": "2026-01-01T00:00:00Z", "created_by": "admin", "status": "paused", "isolation_level": "level_1", "max_agents": 4, "timeout": null}
END
cat > "$ROOT/$A/agents/a1.json" << 'END'
{"agent_id": "a1", "name": "Lead", "role": "lead", "capabilities": ["planning"], "gateway": "gw-1", "status": "idle", "current_task": null, "checkpoint": null}
END
cat > "$ROOT/$A/agents/a2.json" << 'END'
{"agent_id": "a2", "role": "write", "status": "paused", "current_task": "任务-1", "heartbeat_count": 7, "reported_status": "DEGRADED", "progress": 0.5, "ctx_used": 150000, "ctx_limit": 200000, "unknown_field": {"kept": true}}
END
cat > "$ROOT/$A/agents/a3.json" << 'END'
{"agent_id": "a3", "role": "read", "status": "failed", "restart_count": 4, "restart_attempts": 2, "current_task": "a long task name\nwith two lines", "ctx_used": 120000, "ctx_limit": 100000}
END
echo '{"agent_id": "a4", "status": ' > "$ROOT/$A/agents/a4.json"
cat > "$ROOT/$A/tasks/t1.json" << 'END'
{"task_id": "t1", "title": "One", "status": "completed", "dependencies": []}
END
cat > "$ROOT/$A/tasks/t2.json" << 'END'
{"task_id": "t2", "title": "Two", "status": "pending", "dependencies": ["t3"]}
END
cat > "$ROOT/$A/tasks/t3.json" << 'END'
{"task_id": "t3", "title": "Three", "status": "in_progress", "assigned_to": "a1", "dependencies": []}
END
cat > "$ROOT/$B/agents/b1.json" << 'END'
{"agent_id": "b1", "role": "audit", "status": "idle", "heartbeat_count": 0, "progress": 1}
END
"#;

fn golden_root() -> Root {
    let root = Root::new();
    root.sh(ROOT_SCRIPT);
    root
}

/// `expected` with its `{ROOT}` and `{ESC}` filled in.
fn expected(root: &Root, text: &str) -> String {
    text.replace("{ROOT}", root.path.to_str().unwrap())
        .replace("{ESC}", "\x1b")
}

const PLAIN: &str = r#"cell 11111111  Views — golden  active  3 agent(s): 2 unknown, 1 failed
  tasks 1/3 done, 1 in progress, 1 blocked, 0 failed
  BROKEN  malformed JSON in {ROOT}/11111111-1111-4111-8111-111111111111/agents/a4.json at line 2, column 0: EOF while parsing a value
  AGENT  HEALTH   STATE   PID  UPTIME  RESTARTS  NEXT  LAST BEAT  TASK              CONTEXT      PROGRESS  BEATS  REPORTED
  a1     unknown  -       -    -       0         -     never      -                 -            -         0      -
  a2     unknown  paused  -    -       0         -     never      任务-1            75% breach   50%       7      DEGRADED
  a3     failed   failed  -    -       4         -     never      a long task name  120% breach  -         0      -
                                                                  with two lines

cell 22222222  Paused one  paused  1 agent(s): 1 unknown
  tasks 0/0 done, 0 in progress, 0 blocked, 0 failed
  AGENT  HEALTH   STATE  PID  UPTIME  RESTARTS  NEXT  LAST BEAT  TASK  CONTEXT  PROGRESS  BEATS  REPORTED
  b1     unknown  -      -    -       0         -     never      -     -        100%      0      -
"#;

const COLOR: &str = r#"cell 11111111  Views — golden  {ESC}[32mactive{ESC}[0m  3 agent(s): 2 unknown, 1 failed
  tasks 1/3 done, 1 in progress, 1 blocked, 0 failed
  {ESC}[31mBROKEN{ESC}[0m  malformed JSON in {ROOT}/11111111-1111-4111-8111-111111111111/agents/a4.json at line 2, column 0: EOF while parsing a value
{ESC}[1m  AGENT  {ESC}[0m{ESC}[1mHEALTH   {ESC}[0m{ESC}[1mSTATE   {ESC}[0m{ESC}[1mPID  {ESC}[0m{ESC}[1mUPTIME  {ESC}[0m{ESC}[1mRESTARTS  {ESC}[0m{ESC}[1mNEXT  {ESC}[0m{ESC}[1mLAST BEAT  {ESC}[0m{ESC}[1mTASK              {ESC}[0m{ESC}[1mCONTEXT      {ESC}[0m{ESC}[1mPROGRESS  {ESC}[0m{ESC}[1mBEATS  {ESC}[0m{ESC}[1mREPORTED  {ESC}[0m
  a1     {ESC}[2munknown  {ESC}[0m{ESC}[2m-       {ESC}[0m-    -       0         -     never      -                 -            -         0      -
  a2     {ESC}[2munknown  {ESC}[0m{ESC}[38;5;3mpaused  {ESC}[39m-    -       0         -     never      任务-1            75% breach   50%       7      DEGRADED
  a3     {ESC}[38;5;1mfailed   {ESC}[39m{ESC}[38;5;1mfailed  {ESC}[39m-    -       4         -     never      a long task name  120% breach  -         0      -
                                                                  with two lines

cell 22222222  Paused one  {ESC}[33mpaused{ESC}[0m  1 agent(s): 1 unknown
  tasks 0/0 done, 0 in progress, 0 blocked, 0 failed
{ESC}[1m  AGENT  {ESC}[0m{ESC}[1mHEALTH   {ESC}[0m{ESC}[1mSTATE  {ESC}[0m{ESC}[1mPID  {ESC}[0m{ESC}[1mUPTIME  {ESC}[0m{ESC}[1mRESTARTS  {ESC}[0m{ESC}[1mNEXT  {ESC}[0m{ESC}[1mLAST BEAT  {ESC}[0m{ESC}[1mTASK  {ESC}[0m{ESC}[1mCONTEXT  {ESC}[0m{ESC}[1mPROGRESS  {ESC}[0m{ESC}[1mBEATS  {ESC}[0m{ESC}[1mREPORTED  {ESC}[0m
  b1     {ESC}[2munknown  {ESC}[0m{ESC}[2m-      {ESC}[0m-    -       0         -     never      -     -        100%      0      -
"#;

const FAILED: &str = r#"cell 11111111  Views — golden  active  1 agent(s): 1 failed
  tasks 1/3 done, 1 in progress, 1 blocked, 0 failed
  BROKEN  malformed JSON in {ROOT}/11111111-1111-4111-8111-111111111111/agents/a4.json at line 2, column 0: EOF while parsing a value
  AGENT  HEALTH  STATE   PID  UPTIME  RESTARTS  NEXT  LAST BEAT  TASK              CONTEXT      PROGRESS  BEATS  REPORTED
  a3     failed  failed  -    -       4         -     never      a long task name  120% breach  -         0      -
                                                                 with two lines
"#;

const CHECK: &str = r#"PAS CRITICAL - cannot read: malformed JSON in {ROOT}/11111111-1111-4111-8111-111111111111/agents/a4.json at line 2, column 0: EOF while parsing a value | cells=2 agents=1 not_judged=2 healthy=0 degraded=0 unhealthy=0 late=0 down=0 dead=0 unknown=0 offline=0 failed=1
"#;

#[test]
fn status_tables_and_check_keep_their_text() {
    let root = golden_root();
    // Twice: the first pass may record health changes, the second must read the same.
    for _ in 0..2 {
        let run = root.run(&["status"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(run.stdout, expected(&root, PLAIN));
        assert_eq!(root.run(&["status", "--all"]).stdout, run.stdout);
    }
    let run = root.run(&["--color", "always", "status"]);
    assert_eq!(run.stdout, expected(&root, COLOR));
    let run = root.run(&["status", "--health", "failed"]);
    assert_eq!(run.stdout, expected(&root, FAILED));
    let run = root.run(&["status", "--health", "dead"]);
    assert_eq!(run.stdout, "no agent in that health\n");
    let run = root.run(&["check"]);
    assert_eq!((run.code, run.stdout), (2, expected(&root, CHECK)));
    // One cell named: the same text as that cell's part of the whole table.
    let one = root.run(&["status", "22222222"]).stdout;
    assert!(PLAIN.ends_with(&one), "{one}");
}

#[test]
fn an_empty_root_says_so() {
    let root = Root::new();
    let run = root.run(&["status"]);
    assert_eq!(
        run.stdout,
        format!("no cells under {}\n", root.path.display())
    );
}

/// A root of 81 cells (the golden two, and 79 more made from them), so that the whole-root
/// views read cells on several threads (from 64 cells on).
fn many_cells_root() -> Root {
    let root = golden_root();
    let script = r#"set -e
A=11111111-1111-4111-8111-111111111111
B=22222222-2222-4222-8222-222222222222
for i in $(seq 10 88); do
  if [ $((i % 2)) -eq 0 ]; then from=$A; else from=$B; fi
  id="c$i-made-from-$from"
  cp -R "$ROOT/$from" "$ROOT/$id"
  sed -i "s/$from/$id/" "$ROOT/$id/cell.json"
done
"#;
    root.sh(script);
    root
}

#[test]
fn views_read_on_several_threads_are_those_read_on_one() {
    let root = many_cells_root();
    let run_with = |threads: &str, args: &[&str]| {
        let out = root
            .cmd(args)
            .env("PAS_VIEW_THREADS", threads)
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        // The document's clock (`"time"`, and the cells' `"time_used"` from it) is all
        // that may differ between runs.
        let stdout: String = stdout
            .lines()
            .filter(|l| !l.starts_with("  \"time\": ") && !l.contains("\"time_used\": "))
            .map(|l| format!("{l}\n"))
            .collect();
        (
            out.status.code(),
            stdout,
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    // Health changes of the first reading are recorded once, before the comparisons.
    run_with("1", &["status"]);
    let mut many = Vec::new();
    for args in [
        &["status"][..],
        &["status", "--health", "failed"],
        &["--json", "status"],
        &["check"],
    ] {
        let run = run_with("3", args);
        assert_eq!(run, run_with("1", args), "{args:?} on 3 threads and on 1");
        many.push(run);
    }
    // Every cell once, in order, each with its own agents.
    let table = &many[0].1;
    let cells: Vec<&str> = table.lines().filter(|l| l.starts_with("cell ")).collect();
    assert_eq!(cells.len(), 81);
    let mut sorted = cells.clone();
    sorted.sort();
    assert_eq!(cells, sorted);
    assert_eq!(table.lines().filter(|l| l.starts_with("  b1 ")).count(), 40);
    let (code, check, _) = &many[3];
    assert_eq!(*code, Some(2));
    assert!(
        check.contains("cells=81 agents=41 not_judged=82"),
        "{check}"
    );
}
