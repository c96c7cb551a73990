//! The management API (`/api/v1`).

pub mod admin;
pub mod alerts;
pub mod experiments;
pub mod guardrails;
pub mod layers;
pub mod lifecycle;
pub mod power;
pub mod registry;
pub mod results;
