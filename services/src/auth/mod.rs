//! Identities: every admin, service, node and tenant has its own nkey.
//!
//! - [`creds`]: one identity's credential file (its seed, the admins it trusts);
//! - [`book`]: the admin's data directory — the book of identities and their credentials;
//! - [`enroll`]: the book written into the log, as admin-signed enrolments;
//! - [`policy`]: the policy in the log: the one in force, proposals and approvals;
//! - [`perms`], [`server`], [`setup`]: the permission table, nats-server's users, setting up.

pub mod book;
pub mod creds;
pub mod enroll;
pub mod perms;
pub mod policy;
pub mod server;
pub mod setup;

pub use book::{BookError, DataDir};
pub use creds::{Credential, CredsError};
