//! The end-to-end harness: a private RabbitMQ vhost per test, the real service binaries as
//! child processes on ephemeral ports, and helpers to talk to them. The demo and the e2e tests
//! share it, so the demo exercises exactly what the tests prove.
//!
//! Every process started here is killed when its handle drops, also when a test panics; a
//! failing test prints the tail of each process's log.

pub mod broker;
pub mod expect;
pub mod node;
pub mod otlp;
pub mod pg;
pub mod pki;
pub mod procs;
pub mod stack;
pub mod workload;

pub use broker::{Broker, TestVhost};
pub use node::{BrokerNode, NodeSettings};
pub use pg::TestPg;
pub use procs::{Proc, bin_path, free_port};
pub use stack::{Metrics, Stack, StackOptions};
