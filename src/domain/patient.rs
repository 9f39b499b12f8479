//! What is recorded of a patient besides their identifier.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

text_enum! {
    /// Administrative sex, as on the INS.
    Sex {
        Female => "female",
        Male => "male",
        Other => "other",
        Unknown => "unknown",
    }
}
