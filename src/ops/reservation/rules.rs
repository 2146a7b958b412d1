//! The rules of reserving: whether an ask fits a level's capacity (the cell's quota, the
//! machine's capacity), and whether a port may be taken. Pure functions over amounts.

use super::{Amounts, RESOURCES};
use crate::units;

/// One level a reservation must fit: its name for messages, capacity (`None`: unlimited)
/// and what its active reservations hold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Level<'a> {
    /// `"quota"` (the cell's) or `"machine"`.
    pub name: &'a str,
    /// Capacity per resource, `RESOURCES` order.
    pub capacity: [Option<f64>; 4],
    /// Held now, `RESOURCES` order.
    pub held: Amounts,
}

/// What is short at one level, one phrase per resource (`cpu: 1 core asked, 0 cores free of
/// 2 cores (short by 1 core)`); empty when the ask fits.
pub fn shortfalls(level: &Level<'_>, ask: &Amounts) -> Vec<String> {
    let mut short = Vec::new();
    for (i, (_, unit, label)) in RESOURCES.iter().enumerate() {
        let Some(cap) = level.capacity[i] else {
            continue;
        };
        let free = (cap - level.held[i]).max(0.0);
        if ask[i] > free + 1e-9 {
            short.push(format!(
                "{label}: {} asked, {} free of {} (short by {})",
                units::show(ask[i], *unit),
                units::show(free, *unit),
                units::show(cap, *unit),
                units::show(ask[i] - free, *unit)
            ));
        }
    }
    short
}

/// Whether an ask fits every level: `Err` names each level that refuses and what is short
/// there (`over quota: ...; over machine capacity: ...`).
pub fn decide(levels: &[Level<'_>], ask: &Amounts) -> Result<(), String> {
    let refusals: Vec<String> = levels
        .iter()
        .filter_map(|level| {
            let short = shortfalls(level, ask);
            (!short.is_empty()).then(|| {
                let what = if level.name == "machine" {
                    "over machine capacity"
                } else {
                    "over quota"
                };
                format!("{what}: {}", short.join("; "))
            })
        })
        .collect();
    if refusals.is_empty() {
        Ok(())
    } else {
        Err(refusals.join("; "))
    }
}

/// Whether `port` may be reserved on this machine: inside the `range` pas.toml allows, and
/// not held by another job (`holder`: `(cell, job)` of the machine's reservation holding it).
pub fn port_refusal(
    port: u16,
    range: Option<(u16, u16)>,
    holder: Option<(&str, &str)>,
) -> Option<String> {
    if let Some((lo, hi)) = range.filter(|(lo, hi)| port < *lo || port > *hi) {
        return Some(format!(
            "port {port} is outside the machine's ports {lo}-{hi} (pas.toml [capacity] ports)"
        ));
    }
    holder.map(|(cell, job)| format!("port {port} is already reserved by job {job} in cell {cell}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GB: f64 = 1e9;

    fn level(name: &str, capacity: [Option<f64>; 4], held: Amounts) -> Level<'_> {
        Level {
            name,
            capacity,
            held,
        }
    }

    #[test]
    fn an_ask_must_fit_the_cell_and_the_machine() {
        let cell_roomy = level(
            "quota",
            [Some(8.0), Some(16.0 * GB), Some(2.0), None],
            [0.0; 4],
        );
        let cell_full = level(
            "quota",
            [Some(2.0), None, Some(1.0), None],
            [2.0, 0.0, 1.0, 0.0],
        );
        let unlimited = level("quota", [None; 4], [0.0; 4]);
        let machine_one_gpu = level(
            "machine",
            [Some(2.0), Some(4.0 * GB), Some(1.0), Some(0.0)],
            [0.0; 4],
        );
        let machine_gpu_taken = level(
            "machine",
            [Some(2.0), Some(4.0 * GB), Some(1.0), Some(0.0)],
            [0.0, 0.0, 1.0, 0.0],
        );
        type Case<'a> = (&'a str, Vec<Level<'a>>, Amounts, Result<(), &'a str>);
        let cases: Vec<Case> = vec![
            ("fits both", vec![cell_roomy, machine_one_gpu], [1.0, GB, 1.0, 0.0], Ok(())),
            ("nothing asked fits a full cell", vec![cell_full, machine_gpu_taken], [0.0; 4], Ok(())),
            ("exactly the rest fits", vec![unlimited, machine_one_gpu], [2.0, 4.0 * GB, 1.0, 0.0], Ok(())),
            (
                "the cell allows two GPUs, the machine has one",
                vec![cell_roomy, machine_one_gpu],
                [0.0, 0.0, 2.0, 0.0],
                Err("over machine capacity: gpu: 2 asked, 1 free of 1 (short by 1)"),
            ),
            (
                "another cell holds the machine's GPU",
                vec![unlimited, machine_gpu_taken],
                [0.0, 0.0, 1.0, 0.0],
                Err("over machine capacity: gpu: 1 asked, 0 free of 1 (short by 1)"),
            ),
            (
                "both levels short, each named",
                vec![cell_full, machine_gpu_taken],
                [1.0, 0.0, 1.0, 0.0],
                Err("over quota: cpu: 1 core asked, 0 cores free of 2 cores (short by 1 core); gpu: 1 asked, 0 free of 1 (short by 1); over machine capacity: gpu: 1 asked, 0 free of 1 (short by 1)"),
            ),
            (
                "no GPU memory on a machine without GPUs",
                vec![unlimited, machine_one_gpu],
                [0.0, 0.0, 0.0, GB],
                Err("over machine capacity: gpu memory: 1 GB asked, 0 B free of 0 B (short by 1 GB)"),
            ),
            (
                "memory over the machine",
                vec![unlimited, machine_one_gpu],
                [0.0, 5.0 * GB, 0.0, 0.0],
                Err("over machine capacity: memory: 5 GB asked, 4 GB free of 4 GB (short by 1 GB)"),
            ),
        ];
        for (what, levels, ask, want) in cases {
            assert_eq!(
                decide(&levels, &ask).map_err(|e| e.to_string()),
                want.map_err(str::to_string),
                "{what}"
            );
        }
    }

    #[test]
    fn ports_must_be_in_range_and_free_on_the_machine() {
        type Case<'a> = (
            u16,
            Option<(u16, u16)>,
            Option<(&'a str, &'a str)>,
            Option<&'a str>,
        );
        let cases: [Case; 5] = [
            (8080, None, None, None),
            (8080, Some((8000, 8999)), None, None),
            (
                80,
                Some((8000, 8999)),
                None,
                Some("port 80 is outside the machine's ports 8000-8999"),
            ),
            (9000, Some((8000, 8999)), None, Some("outside")),
            (
                8080,
                None,
                Some(("c2", "j1")),
                Some("port 8080 is already reserved by job j1 in cell c2"),
            ),
        ];
        for (port, range, holder, want) in cases {
            let got = port_refusal(port, range, holder);
            match want {
                None => assert_eq!(got, None),
                Some(w) => assert!(got.as_deref().is_some_and(|g| g.contains(w)), "{got:?}"),
            }
        }
    }
}
