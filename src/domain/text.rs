//! The rules for text typed by people, in one place: names and free text,
//! required or optional, trimmed, with one constant per limit.
//!
//! Names (people, organisations, patients) are shown in lists, on the
//! pharmacist's page and in emails, next to other names: a character that
//! is invisible or reorders what follows (`U+202E RIGHT-TO-LEFT OVERRIDE`,
//! `U+200B ZERO WIDTH SPACE`, any Unicode *format* character, category Cf)
//! can make one person look like another or hide part of a name, so names
//! refuse them with the control characters.
//!
//! Free text (summaries, questions, answers, messages, notes, comments,
//! reasons) is written by clinicians and may carry emoji, whose sequences
//! need the zero-width joiner (U+200D) and variation selectors: it refuses
//! only control characters other than line breaks and tabs, and the
//! bidirectional overrides and isolates (U+202A–U+202E, U+2066–U+2069), which
//! can make "10 mg" read as "01 mg".
//!
//! Every limit counts the characters (Unicode scalar values) sent, surrounding
//! white space included, as the OpenAPI `maxLength` does; the stored value
//! is trimmed. The OpenAPI document carries the same limits (a test compares
//! each constant with the `maxLength` it backs) and the same character rules
//! as patterns ([`name_pattern`], [`free_text_pattern`]).

use unicode_general_category::{GeneralCategory, get_general_category};

use crate::error::FieldError;

/// A person's full name (accounts).
pub const PERSON_NAME_MAX: usize = 200;
/// An organisation's name.
pub const ORGANIZATION_NAME_MAX: usize = 200;
/// A patient's family name.
pub const FAMILY_NAME_MAX: usize = 100;
/// A patient's given names.
pub const GIVEN_NAMES_MAX: usize = 200;

/// A handover's discharge summary.
pub const SUMMARY_MAX: usize = 10_000;
/// A handover's follow-up instructions.
pub const FOLLOW_UP_MAX: usize = 5_000;
/// The GP's comment when reconciling a handover.
pub const COMMENT_MAX: usize = 5_000;
/// A consultation's question.
pub const QUESTION_MAX: usize = 10_000;
/// A centre's answer to a consultation.
pub const ANSWER_MAX: usize = 20_000;
/// Why a centre declines a consultation.
pub const DECLINE_REASON_MAX: usize = 5_000;
/// A message in a thread.
pub const MESSAGE_MAX: usize = 10_000;
/// A note on a consent decision.
pub const CONSENT_NOTE_MAX: usize = 1_000;
/// Why access to a patient is asked for (access request, emergency access).
pub const ACCESS_REASON_MAX: usize = 1_000;
/// The fewest characters of such a reason, once trimmed: a word is not a reason.
pub const ACCESS_REASON_MIN: usize = 10;
/// A note on an observation.
pub const OBSERVATION_NOTE_MAX: usize = 2_000;
/// What changed in a care-plan version.
pub const CHANGE_SUMMARY_MAX: usize = 500;
/// Why the OMT is temporarily adjusted.
pub const ADJUSTMENT_REASON_MAX: usize = 500;
/// A note on an analgesic line.
pub const LINE_NOTE_MAX: usize = 1_000;
/// A plan's pain goal.
pub const PAIN_GOAL_MAX: usize = 1_000;
/// A plan's non-drug measures.
pub const NON_DRUG_MEASURES_MAX: usize = 2_000;
/// Why a warning is acknowledged.
pub const JUSTIFICATION_MAX: usize = 1_000;
/// The fewest characters of a justification, once trimmed.
pub const JUSTIFICATION_MIN: usize = 10;

/// Which rule of characters a text follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// No control and no format (Cf) character.
    Name,
    /// No control but line breaks and tabs, no bidirectional override or isolate.
    Free,
}

/// The bidirectional embeddings, overrides and isolates.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Whether `c` is refused in text of this flavour.
pub fn refused(flavour: Flavour, c: char) -> bool {
    match flavour {
        Flavour::Name => c.is_control() || get_general_category(c) == GeneralCategory::Format,
        Flavour::Free => (c.is_control() && !matches!(c, '\n' | '\r' | '\t')) || is_bidi_control(c),
    }
}

fn refusal(flavour: Flavour) -> &'static str {
    match flavour {
        Flavour::Name => {
            "must not contain control characters or invisible format characters (such as U+200B or U+202E)"
        }
        Flavour::Free => {
            "must not contain control characters other than line breaks and tabs, nor bidirectional overrides or isolates (U+202A–U+202E, U+2066–U+2069)"
        }
    }
}

/// Checks a required text: at most `max` characters sent, something left
/// once trimmed, no refused character. Returns it trimmed.
pub fn required(
    raw: &str,
    field: &str,
    flavour: Flavour,
    max: usize,
) -> Result<String, FieldError> {
    // The limit counts what was sent, as the OpenAPI `maxLength` does.
    if raw.chars().count() > max {
        return Err(FieldError::new(field, format!("at most {max} characters")));
    }
    let text = raw.trim();
    if text.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if text.chars().any(|c| refused(flavour, c)) {
        return Err(FieldError::new(field, refusal(flavour)));
    }
    Ok(text.to_owned())
}

/// Checks an optional text: absent, empty or white space means none;
/// otherwise as [`required`].
pub fn optional(
    raw: Option<&str>,
    field: &str,
    flavour: Flavour,
    max: usize,
) -> Result<Option<String>, FieldError> {
    match raw {
        Some(raw) if !raw.trim().is_empty() => required(raw, field, flavour, max).map(Some),
        Some(raw) if raw.chars().count() > max => {
            Err(FieldError::new(field, format!("at most {max} characters")))
        }
        _ => Ok(None),
    }
}

/// [`required`] with a minimum length once trimmed (reasons, justifications).
pub fn required_at_least(
    raw: &str,
    field: &str,
    flavour: Flavour,
    min: usize,
    max: usize,
) -> Result<String, FieldError> {
    let text = required(raw, field, flavour, max)?;
    if text.chars().count() < min {
        return Err(FieldError::new(field, format!("{min} to {max} characters")));
    }
    Ok(text)
}

/// The format (Cf) characters of the Basic Multilingual Plane, as ranges.
/// The name pattern of the OpenAPI document is built from it; a unit test
/// checks it against the Unicode data of `unicode-general-category`. (The
/// few Cf characters above U+FFFF are refused too but not in the pattern:
/// regular-expression dialects disagree on how to write them.)
const FORMAT_BMP: &[(char, char)] = &[
    ('\u{00AD}', '\u{00AD}'),
    ('\u{0600}', '\u{0605}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{06DD}', '\u{06DD}'),
    ('\u{070F}', '\u{070F}'),
    ('\u{0890}', '\u{0891}'),
    ('\u{08E2}', '\u{08E2}'),
    ('\u{180E}', '\u{180E}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{202A}', '\u{202E}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFF9}', '\u{FFFB}'),
];

fn class_of(ranges: &[(char, char)]) -> String {
    ranges
        .iter()
        .map(|&(a, b)| {
            if a == b {
                format!("\\u{:04x}", a as u32)
            } else {
                format!("\\u{:04x}-\\u{:04x}", a as u32, b as u32)
            }
        })
        .collect()
}

/// The characters a name refuses, as the inside of a regular-expression class.
fn name_refused_class() -> String {
    format!("\\x00-\\x1f\\x7f-\\x9f{}", class_of(FORMAT_BMP))
}

/// The characters free text refuses, as the inside of a regular-expression class.
pub fn free_refused_class() -> String {
    "\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069".to_owned()
}

/// The OpenAPI pattern of a required name: no refused character and at
/// least one that is not white space.
pub fn name_pattern() -> String {
    let refused = name_refused_class();
    format!("^[^{refused}]*[^\\s{refused}][^{refused}]*$")
}

/// The OpenAPI pattern of a required free text.
pub fn free_text_pattern() -> String {
    let refused = free_refused_class();
    format!("^[^{refused}]*[^\\s{refused}][^{refused}]*$")
}

/// The OpenAPI pattern of an optional free text (empty means none).
pub fn optional_free_text_pattern() -> String {
    format!("^[^{}]*$", free_refused_class())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_refuse_controls_and_format_characters() {
        let name = |s: &str| required(s, "name", Flavour::Name, 20);
        assert_eq!(name("  Maïwenn Le Gall ").unwrap(), "Maïwenn Le Gall");
        assert_eq!(name("Jean-Éloi d’Arc").unwrap(), "Jean-Éloi d’Arc");
        for bad in [
            "Le\u{202E}Gall",
            "Le\u{200B}Gall",
            "\u{FEFF}Le Gall",
            "Le\u{2066}Gall",
            "Le\u{00AD}Gall",
            "Le\u{200D}Gall",
            "Le\u{E0041}Gall",
            "Le\nGall",
            "Le\u{0}Gall",
            "Le\u{85}Gall",
        ] {
            let err = name(bad).unwrap_err();
            assert_eq!(err.field, "name", "{bad:?}");
        }
        assert!(name("   ").is_err());
        // The limit counts what was sent, surrounding spaces included.
        assert!(name(&format!(" {} ", "a".repeat(19))).is_err());
        assert!(name(&"é".repeat(20)).is_ok());
        assert!(name(&"é".repeat(21)).is_err());
    }

    #[test]
    fn free_text_keeps_emoji_and_line_breaks() {
        let free = |s: &str| required(s, "body", Flavour::Free, 100);
        let emoji = "Vu 👩\u{200D}⚕\u{FE0F} 👍🏽 🏳\u{FE0F}\u{200D}🌈";
        assert_eq!(free(emoji).unwrap(), emoji);
        assert_eq!(free(" a\nb\r\n\tc ").unwrap(), "a\nb\r\n\tc");
        // A zero-width space is odd but harmless in prose.
        assert!(free("a\u{200B}b").is_ok());
        for bad in [
            "10\u{202E}mg",
            "x\u{2067}y",
            "x\u{202A}y",
            "a\u{1b}[31m",
            "a\u{0}",
        ] {
            assert!(free(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn optional_and_minimum() {
        assert_eq!(optional(None, "note", Flavour::Free, 5).unwrap(), None);
        assert_eq!(
            optional(Some("  "), "note", Flavour::Free, 5).unwrap(),
            None
        );
        assert!(optional(Some("       "), "note", Flavour::Free, 5).is_err());
        assert_eq!(
            optional(Some(" ok "), "note", Flavour::Free, 5).unwrap(),
            Some("ok".into())
        );
        assert!(optional(Some("\u{202E}x"), "note", Flavour::Free, 5).is_err());
        assert!(required_at_least("too short", "reason", Flavour::Free, 10, 100).is_err());
        assert!(required_at_least("long enough", "reason", Flavour::Free, 10, 100).is_ok());
    }

    #[test]
    fn the_format_table_is_the_unicode_data() {
        for c in (0u32..0x1_0000).filter_map(char::from_u32) {
            let in_table = FORMAT_BMP.iter().any(|&(a, b)| (a..=b).contains(&c));
            let cf = get_general_category(c) == GeneralCategory::Format;
            assert_eq!(in_table, cf, "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn patterns_name_the_refused_classes() {
        assert!(name_pattern().contains("\\u200b-\\u200f"));
        assert!(name_pattern().contains("\\ufeff"));
        assert!(free_text_pattern().contains("\\u202a-\\u202e"));
        assert!(!free_text_pattern().contains("\\u200d"));
    }
}
