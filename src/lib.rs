//! hookd: a GitOps / infrastructure-automation trigger daemon.
//!
//! Webhooks come in through [`server`], are authenticated and normalized by
//! [`source`] into [`event`]s, matched against [`config::Pipeline`]s by
//! [`matcher`], stored by [`store`] before they are acknowledged, scheduled
//! by [`scheduler`], checked out by [`workspace`] and executed by [`runner`].
//! See ARCHITECTURE.md for the map.

pub mod client;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod event;
pub mod explain;
pub mod matcher;
pub mod metrics;
pub mod reload;
pub mod runner;
pub mod scheduler;
pub mod server;
pub mod source;
pub mod store;
pub mod systemd;
pub mod workspace;
