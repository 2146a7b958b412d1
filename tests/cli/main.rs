//! One integration-test binary: every test runs the real `pas` in a temporary root.

mod harness;

mod budgets;
mod cells;
mod concurrency;
mod containers;
mod dashboard;
mod demo;
mod docs;
mod etcd;
mod etcd_data;
mod etcd_helpers;
mod etcd_live;
mod etcd_nodes;
mod faults;
mod hand_written;
mod heartbeats;
mod ids;
mod limits;
mod mcp;
mod processes;
mod programs;
mod queue;
mod quota;
mod revival;
mod schemas;
mod serve;
mod shell;
mod tasks;
mod top;
mod trust;
mod usage;
mod ux;
mod views;
