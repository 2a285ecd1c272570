//! eDeploy server: a drop-in replacement for the legacy `upload.py` CGI.
//!
//! One module per concept of the legacy behaviour, so that each rule lives in
//! one obvious place.

pub mod batch;
pub mod cgi;
pub mod check;
pub mod cli;
pub mod cmdb;
pub mod config;
pub mod docs;
pub mod explain;
pub mod generate;
pub mod health;
pub mod hw;
pub mod journal;
pub mod literal;
pub mod logs;
pub mod plan;
pub mod provision;
pub mod pxemngr;
pub(crate) mod pydict;
pub mod script;
pub mod spec;
pub mod state;
pub mod status;
pub mod store;
