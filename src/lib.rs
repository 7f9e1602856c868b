//! feedgraph: a graph-centric feedback store for LLM answers and the LoRA adapters behind
//! them. See README.md for what it does and ARCHITECTURE.md for how the modules fit.

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]
#![warn(missing_docs)]

pub mod cli;
pub mod config;
pub mod cypher;
pub mod events;
pub mod graph;
pub mod http;
pub mod model;
pub mod service;
pub mod store;
pub mod validate;
