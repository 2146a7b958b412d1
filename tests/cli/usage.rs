//! Usage you can see: a running agent's process tree (RSS, CPU, threads, open files, IO)
//! in `status --json`, `agent show` and `metrics`, checked against `/proc`.

use serde_json::Value;

use crate::harness::{tool_available, wait_until, Root};
use crate::quota::children_of;

/// `VmRSS` of `pid`, bytes.
fn vm_rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn tree_rss(pid: i32) -> u64 {
    vm_rss(pid) + children_of(pid).into_iter().map(tree_rss).sum::<u64>()
}

fn within_ten_percent(shown: f64, real: f64) -> bool {
    (shown - real).abs() <= real * 0.10
}

#[test]
fn a_running_agents_tree_usage_matches_proc() {
    if !tool_available(
        "python3",
        &["-c", ""],
        "the agent holds 50 MB in a python3 child",
    ) {
        return;
    }
    let root = Root::new();
    let cell = root.cell("Usage");
    let ready = root.path.join("ready");
    // The agent (a shell) runs a python3 child holding 50 MB it has written to.
    let body = format!(
        r#"python3 -c 'import time; b = b"x" * (50 * 1024 * 1024); open("{}", "w").close(); time.sleep(300)' &
wait"#,
        ready.display()
    );
    let path = root.script("hold.sh", &body);
    root.ok(&["agent", "add", &cell, "a1", "--", &path]);
    root.ok(&["quota", "set", &cell, "--mem", "1GB"]);
    let pid: i32 = root.ok(&["agent", "start", &cell, "a1"]).parse().unwrap();
    root.ok(&[
        "reserve", &cell, "--job", "j1", "--agent", "a1", "--mem", "256MB",
    ]);
    wait_until(15.0, "the python child to hold its 50 MB", || {
        ready.exists()
    });
    let status = root.json(&["status", &cell, "--json"]);
    let agent = &status["cells"][0]["agents"][0];
    let usage = &agent["usage"];
    let real = tree_rss(pid) as f64;
    let shown = usage["rss_bytes"].as_f64().unwrap();
    assert!(shown > 50.0 * 1048576.0, "{usage}");
    assert!(
        within_ten_percent(shown, real),
        "status {shown} vs /proc {real}"
    );
    assert_eq!(usage["processes"], 2, "the shell and its python: {usage}");
    assert!(usage["threads"].as_u64().unwrap() >= 2, "{usage}");
    assert!(usage["open_files"].as_u64().unwrap() >= 3, "{usage}");
    assert!(usage["cpu_seconds"].as_f64().unwrap() >= 0.0, "{usage}");
    assert!(usage["cpu_percent"].is_number(), "{usage}");
    assert!(usage["io"]["write_chars"].is_u64(), "{usage}");
    assert_eq!(agent["cell_quota"]["memory"], 1e9);
    assert_eq!(agent["reserved"]["memory"], 256e6);

    let shown = root.json(&["agent", "show", &cell, "a1"]);
    let rss = shown["usage"]["rss_bytes"].as_f64().unwrap();
    assert!(
        within_ten_percent(rss, tree_rss(pid) as f64),
        "{}",
        shown["usage"]
    );
    let text = root.ok(&["agent", "show", &cell, "a1"]);
    assert!(
        text.contains("MB RSS") && text.contains("memory 1 GB (reserved 256 MB)"),
        "{text}"
    );

    let metrics = root.ok(&["metrics"]);
    let line = metrics
        .lines()
        .find(|l| l.starts_with("pas_agent_rss_bytes{") && l.contains("agent=\"a1\""))
        .unwrap_or_else(|| panic!("{metrics}"));
    let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(within_ten_percent(value, tree_rss(pid) as f64), "{line}");
    assert!(metrics.contains("# TYPE pas_agent_cpu_seconds_total counter"));
    root.ok(&["agent", "stop", &cell, "a1"]);
    let stopped = root.json(&["status", &cell, "--json"]);
    assert_eq!(stopped["cells"][0]["agents"][0]["usage"], Value::Null);
}
