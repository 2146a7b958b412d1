//! Link options of one binary: `pas-supervise` is linked as a position-dependent
//! executable. One runs per agent, for as long as the agent lives; in a PIE the dynamic
//! loader writes the load address into every pointer of `.data.rel.ro` (vtables, string
//! and panic-location tables), making those pages private to each process. Without PIE
//! the linker resolves them once and the pages stay clean and shared between all
//! supervisors (docs/design.md, Processes and revival, has the figures). `pas` itself and
//! the other programs stay PIE, with ASLR of the executable.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux");
    if linux {
        println!("cargo:rustc-link-arg-bin=pas-supervise=-no-pie");
    }
}
