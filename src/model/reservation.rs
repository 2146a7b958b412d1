//! `reservations.json`: leases of CPU, memory, GPU, GPU memory and ports that agents' jobs
//! hold against the quota in `config/isolation.json` `resource_limits`.
//!
//! The list keeps every reservation, active or ended, oldest first; writing it merges entry
//! by entry, so an entry's own unknown keys and key order survive too.

use chrono::{DateTime, Utc};

use crate::model::status::ReservationStatus;

record! {
    /// The whole file.
    #[derive(Default)]
    pub struct Reservations {
        /// Every reservation, oldest first. A cell without the file has none.
        reservations: Vec<Reservation> = or_default,
    }
}

document!(Reservations, |_| "reservations.json".to_string());

impl Reservations {
    /// The reservations that still hold.
    pub fn active(&self) -> impl Iterator<Item = &Reservation> {
        self.reservations
            .iter()
            .filter(|r| r.status == ReservationStatus::Active)
    }
}

record! {
    /// One lease.
    pub struct Reservation {
        /// The job's id: one active reservation per job.
        job: String = required,
        /// The agent holding the lease: when it fails or is removed, the lease ends.
        agent: String = required,
        /// CPU cores.
        cpu: f64 = or_default,
        /// Memory in bytes; it also bounds the agent's address space.
        memory: f64 = or_default,
        /// GPUs.
        gpu: f64 = or_default,
        /// GPU memory in bytes.
        gpu_memory: f64 = or_default,
        /// A TCP port, held by one active reservation at a time.
        port: Option<u16> = nullable,
        /// The job's process group, which `pas kill` ends with its members' descendants.
        pgid: Option<i32> = nullable,
        /// The job's process, which `pas kill` ends with its descendants.
        pid: Option<i32> = optional,
        /// The start time of `pid` (clock ticks since boot): a reused pid is not the job.
        pid_start_time: Option<u64> = optional,
        /// Whether the lease still holds.
        status: ReservationStatus = required,
        /// When it was made.
        reserved_at: DateTime<Utc> = required,
        /// When it ended.
        ended_at: Option<DateTime<Utc>> = nullable,
        /// Why it ended: `released`, `killed`, `agent failed`, `agent removed`.
        end_reason: Option<String> = nullable,
    }
}

impl Reservation {
    /// The amounts of the four quota resources, in `crate::ops::reservation::RESOURCES` order
    /// (cpu, memory, gpu, gpu_memory).
    pub fn amounts(&self) -> [f64; 4] {
        [self.cpu, self.memory, self.gpu, self.gpu_memory]
    }
}
