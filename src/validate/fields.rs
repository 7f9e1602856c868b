//! Shape checks of single fields: texts (trimmed, bounded, no NUL), identifiers (the id
//! alphabet), adapter ids and metadata objects. Each failure is a [`ValidationError`]
//! naming the field.

use super::{FieldLimits, ValidationError};
use crate::model::Metadata;

pub(super) fn required_text(
    field: &'static str,
    value: Option<String>,
    l: &FieldLimits,
) -> Result<String, ValidationError> {
    match optional_text(field, value, l)? {
        Some(v) => Ok(v),
        None => Err(ValidationError::Missing { field, hint: "" }),
    }
}

pub(super) fn optional_text(
    field: &'static str,
    value: Option<String>,
    l: &FieldLimits,
) -> Result<Option<String>, ValidationError> {
    let Some(v) = value else { return Ok(None) };
    if v.trim().is_empty() {
        return Ok(None);
    }
    let n = v.chars().count();
    if n > l.max_text_chars {
        return Err(ValidationError::TooLong {
            field,
            actual: n,
            limit: l.max_text_chars,
            unit: "characters",
        });
    }
    if v.contains('\0') {
        return Err(ValidationError::Invalid {
            field,
            reason: "contains a NUL character".into(),
        });
    }
    Ok(Some(v))
}

/// The characters an id may hold besides ASCII letters and digits. Ids are keys, appear in
/// URLs and are compared by eye: ASCII only, so there are no invisible (zero-width, bidi
/// control) or look-alike (full-width, Cyrillic) characters, no whitespace, no backslash.
pub const ID_PUNCTUATION: &str = "-_.:@/+";

/// Checks an identifier-like field: bounded, in the id alphabet; blank means absent.
pub fn check_id(
    field: &'static str,
    value: Option<String>,
    l: &FieldLimits,
) -> Result<Option<String>, ValidationError> {
    let Some(v) = value else { return Ok(None) };
    let v = v.trim().to_owned();
    if v.is_empty() {
        return Ok(None);
    }
    check_id_text(field, &v, l)?;
    Ok(Some(v))
}

/// Checks an id that is already trimmed and non-empty: its length in characters and the id
/// alphabet (ASCII letters, digits and [`ID_PUNCTUATION`]; not `.` or `..` as a whole).
/// Allocates nothing unless it fails (bulk loads call it per line).
pub fn check_id_text(field: &'static str, v: &str, l: &FieldLimits) -> Result<(), ValidationError> {
    let n = v.chars().count();
    if n > l.max_id_chars {
        return Err(ValidationError::TooLong {
            field,
            actual: n,
            limit: l.max_id_chars,
            unit: "characters",
        });
    }
    check_id_alphabet(field, v)
}

/// The id alphabet on its own (see [`ID_PUNCTUATION`]). The offending character is named
/// by its code point, never echoed raw unless it is visible ASCII.
pub fn check_id_alphabet(field: &'static str, v: &str) -> Result<(), ValidationError> {
    if v == "." || v == ".." {
        return Err(ValidationError::Invalid {
            field,
            reason: "'.' and '..' are not valid ids".into(),
        });
    }
    match v
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || ID_PUNCTUATION.contains(*c)))
    {
        None => Ok(()),
        Some(c) => Err(ValidationError::Invalid {
            field,
            reason: format!(
                "contains {}; ids may use ASCII letters, digits and {ID_PUNCTUATION}",
                describe_char(c)
            ),
        }),
    }
}

/// `U+XXXX`, with the character itself only when it is visible ASCII.
fn describe_char(c: char) -> String {
    let code = format!("U+{:04X}", u32::from(c));
    match c {
        ' ' => format!("{code} (space)"),
        c if c.is_ascii_graphic() => format!("'{c}' ({code})"),
        c if c.is_control() => format!("{code} (a control character)"),
        _ => code,
    }
}

/// Adapter ids appear in URL paths and Cypher literals: the id alphabet without '/'.
pub fn check_adapter_id(field: &'static str, id: String) -> Result<String, ValidationError> {
    check_id_alphabet(field, &id)?;
    if id.contains('/') {
        return Err(ValidationError::Invalid {
            field,
            reason: format!("'{id}' contains '/', which adapter ids may not hold"),
        });
    }
    Ok(id)
}

/// Checks a metadata object against the byte limit.
pub fn check_metadata(
    field: &'static str,
    value: Option<serde_json::Map<String, serde_json::Value>>,
    l: &FieldLimits,
) -> Result<Metadata, ValidationError> {
    let m = Metadata(value.unwrap_or_default());
    let n = m.encoded_len();
    if n > l.max_metadata_bytes {
        return Err(ValidationError::TooLong {
            field,
            actual: n,
            limit: l.max_metadata_bytes,
            unit: "bytes",
        });
    }
    Ok(m)
}
