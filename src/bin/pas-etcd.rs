//! `pas-etcd`: `pas` with the etcd store linked in. `pas --store etcd://...` (or
//! `PAS_STORE`, or `store` in pas.toml) executes it with the same arguments; see docs/etcd.md.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    pas::run_etcd()
}
