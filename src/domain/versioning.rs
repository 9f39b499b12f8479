//! Optimistic concurrency on a versioned record (the care plan, the
//! clinical context): an edit names the version it was based on.

use crate::error::ApiError;

/// Whether an edit based on `expected` (the `If-Match` version; `None`:
/// none sent) may replace `current` (`None`: nothing stored yet) of the
/// patient's `what` ("care plan"): 428 when a version exists and none was
/// named, 412 when it moved on or none exists yet.
pub fn check_base(current: Option<i32>, expected: Option<i32>, what: &str) -> Result<(), ApiError> {
    match (current, expected) {
        (Some(_), None) => Err(ApiError::PreconditionRequired(format!(
            "this patient has a {what}: send If-Match with the version you edited"
        ))),
        (Some(current), Some(expected)) if current != expected => {
            Err(ApiError::PreconditionFailed(format!(
                "the {what} is at version {current}, not {expected}; reload it"
            )))
        }
        (None, Some(_)) => Err(ApiError::PreconditionFailed(format!(
            "this patient has no {what} yet"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case() {
        assert!(check_base(None, None, "care plan").is_ok());
        assert!(check_base(Some(3), Some(3), "care plan").is_ok());
        assert!(matches!(
            check_base(Some(3), None, "care plan"),
            Err(ApiError::PreconditionRequired(m)) if m.contains("has a care plan")
        ));
        assert!(matches!(
            check_base(Some(4), Some(3), "clinical context"),
            Err(ApiError::PreconditionFailed(m)) if m == "the clinical context is at version 4, not 3; reload it"
        ));
        assert!(matches!(
            check_base(None, Some(1), "care plan"),
            Err(ApiError::PreconditionFailed(m)) if m == "this patient has no care plan yet"
        ));
    }
}
