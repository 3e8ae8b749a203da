//! End-to-end tests: the real binaries as processes, the real RabbitMQ, the simulator.
//! Build the binaries first (`make test` does): `cargo build --workspace --bins`.

mod chaos;
mod ctl;
mod delivery;
mod demo;
mod guard;
mod login;
mod observability;
mod provider_aws;
mod provider_github;
mod provider_salesforce;
mod provider_scim;
mod provider_strict;
mod provider_support;
mod references;
mod skeleton;
mod state_of_record;
mod tls;
