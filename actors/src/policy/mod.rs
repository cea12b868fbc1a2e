//! The policy: what a tenant's submission may be ([`admit`]), and how the policy in force
//! changes only with M of N admin approvals ([`book`]). Pure.

pub mod admit;
pub mod book;

pub use admit::{Usage, admit, image_registry};
pub use book::{Adopted, PolicyBook};

#[cfg(test)]
mod tests;
