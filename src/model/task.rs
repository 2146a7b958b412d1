//! `tasks/<task_id>.json`: a unit of work, its assignment, and the queue state pas records
//! for it (claims, attempts, handoff requests).

use chrono::{DateTime, Utc};

use crate::model::status::{Priority, TaskStatus};

record! {
    /// One task file.
    pub struct Task {
        /// The task's id; the file name (without `.json`) is authoritative.
        task_id: String = required,
        /// A short title.
        title: String = required,
        /// The longer description; absent means empty.
        description: String = or_default,
        /// The agent it is for: only that agent may claim it. `null`: anyone eligible.
        assigned_to: Option<String> = nullable,
        /// Its lifecycle.
        status: TaskStatus = required,
        /// Scheduling order among ready tasks.
        priority: Priority = or_default,
        /// Tasks that must be `completed` before it is ready.
        dependencies: Vec<String> = or_default,
        /// Seconds an attempt may take once claimed; `null`: no limit.
        timeout: Option<f64> = nullable,
        /// Artifact paths it produced or needs (referenced, not copied).
        artifacts: Vec<String> = or_default,
        /// When it was added; ready tasks of equal priority go oldest first.
        created_at: Option<DateTime<Utc>> = optional,
        /// When it reached `completed` or `failed`.
        completed_at: Option<DateTime<Utc>> = nullable,
        /// When the current attempt was claimed; `timeout` counts from here.
        started_at: Option<DateTime<Utc>> = nullable,
        /// Attempts so far, toward `max_retries`.
        attempts: u64 = or_default,
        /// The error of the last failed attempt.
        last_error: Option<String> = nullable,
        /// The agent holding the claim.
        claimed_by: Option<String> = nullable,
        /// Capabilities a claiming agent must all have.
        required_capabilities: Vec<String> = or_default,
        /// Set when a claim filled an empty `assigned_to`, so a requeue empties it again.
        queue_assigned: bool = flag,
        /// A handoff waiting for an operator (`handoff_approval: manual`).
        handoff_request: Option<HandoffRequest> = optional,
    }
}

document!(Task, |map| match crate::model::id_in(map, "task_id") {
    Some(id) => crate::store::FileKey::Task(&id).relative(),
    None => "task file".to_string(),
});

impl Task {
    /// A new pending task with every other field at its default, for tests: pas itself
    /// starts from `templates/task.json`.
    #[cfg(test)]
    pub fn new(task_id: impl Into<String>, title: impl Into<String>) -> Task {
        Task {
            task_id: task_id.into(),
            title: title.into(),
            description: String::new(),
            assigned_to: None,
            status: TaskStatus::Pending,
            priority: Priority::default(),
            dependencies: Vec::new(),
            timeout: None,
            artifacts: Vec::new(),
            created_at: None,
            completed_at: None,
            started_at: None,
            attempts: 0,
            last_error: None,
            claimed_by: None,
            required_capabilities: Vec::new(),
            queue_assigned: false,
            handoff_request: None,
            extra: serde_json::Map::new(),
        }
    }

    /// The keys a person writes to define a task (a mission file's task entry); the others
    /// are pas's records of the queue, which `pas cell export` leaves out.
    pub const DEFINITION: &'static [&'static str] = &[
        "task_id",
        "title",
        "description",
        "assigned_to",
        "priority",
        "dependencies",
        "timeout",
        "required_capabilities",
    ];

    /// Whether it is finished for good (`completed` or `failed`): no claim, handoff or
    /// release touches it.
    pub fn is_finished(&self) -> bool {
        matches!(self.status, TaskStatus::Completed | TaskStatus::Failed)
    }
}

record! {
    /// A handoff waiting for `pas task handoff approve|deny`.
    pub struct HandoffRequest {
        /// Its id, as the approve and deny commands take it.
        id: String = required,
        /// The agent handing the task over.
        from: String = required,
        /// The agent taking it.
        to: String = required,
        /// When it was filed.
        requested_at: Option<DateTime<Utc>> = optional,
    }
}
