//! Lock and election names.
//!
//! Names become Kubernetes `Lease` object names in the Kubernetes store and
//! path segments everywhere, so every store accepts exactly what Kubernetes
//! accepts for an object name: a DNS-1123 subdomain.

use thiserror::Error;

/// The longest name Kubernetes accepts for an object (DNS-1123 subdomain).
pub const MAX_NAME_LEN: usize = 253;

/// Why a lock or election name was refused. The `Display` text is written
/// for the person who chose the name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    /// The name is the empty string.
    #[error("name must not be empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    #[error("name is {len} characters long; at most {MAX_NAME_LEN} are allowed")]
    TooLong {
        /// The length of the refused name.
        len: usize,
    },
    /// The name holds a character other than `a-z`, `0-9`, `-` and `.`.
    #[error("name contains {found:?} at position {position}; only lowercase letters, digits, '-' and '.' are allowed")]
    BadCharacter {
        /// The offending character.
        found: char,
        /// Its zero-based character position.
        position: usize,
    },
    /// A dot-separated label is empty or starts or ends with something other
    /// than a lowercase letter or digit.
    #[error(
        "label {label:?} must start and end with a lowercase letter or digit (names are DNS-1123 subdomains, e.g. \"orders-1\" or \"db.primary\")"
    )]
    BadLabel {
        /// The offending label (possibly empty).
        label: String,
    },
}

/// Checks that `name` is a valid Kubernetes object name (a DNS-1123
/// subdomain): at most 253 characters, lowercase alphanumerics, `-` and `.`,
/// each dot-separated label starting and ending with an alphanumeric.
///
/// ```
/// use mpsync_core::validate_name;
/// assert!(validate_name("orders-7").is_ok());
/// assert!(validate_name("db.primary").is_ok());
/// assert!(validate_name("Orders").is_err());
/// assert!(validate_name("-x").is_err());
/// ```
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong { len: name.len() });
    }
    if let Some((position, found)) = name
        .chars()
        .enumerate()
        .find(|(_, c)| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.'))
    {
        return Err(NameError::BadCharacter { found, position });
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    for label in name.split('.') {
        let bytes = label.as_bytes();
        let ok = match (bytes.first(), bytes.last()) {
            (Some(&first), Some(&last)) => alnum(first) && alnum(last),
            _ => false,
        };
        if !ok {
            return Err(NameError::BadLabel { label: label.to_owned() });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_kubernetes_names() {
        for ok in ["a", "0", "test", "orders-12", "a.b.c", "x-1.y-2", &"a".repeat(253)] {
            assert_eq!(validate_name(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_what_kubernetes_refuses() {
        assert_eq!(validate_name(""), Err(NameError::Empty));
        assert_eq!(validate_name(&"a".repeat(254)), Err(NameError::TooLong { len: 254 }));
        assert!(matches!(validate_name("Test"), Err(NameError::BadCharacter { found: 'T', position: 0 })));
        assert!(matches!(validate_name("a_b"), Err(NameError::BadCharacter { found: '_', .. })));
        assert!(matches!(validate_name("a/b"), Err(NameError::BadCharacter { found: '/', .. })));
        assert!(matches!(validate_name("é"), Err(NameError::BadCharacter { .. })));
        for bad in ["-a", "a-", ".a", "a.", "a..b", "a.-b"] {
            assert!(matches!(validate_name(bad), Err(NameError::BadLabel { .. })), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn matches_the_dns1123_subdomain_regex(name in "[a-z0-9.-]{0,12}") {
            let label = |l: &str| {
                !l.is_empty()
                    && l.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
                    && l.chars().last().is_some_and(|c| c.is_ascii_alphanumeric())
            };
            let expected = !name.is_empty() && name.split('.').all(label);
            prop_assert_eq!(validate_name(&name).is_ok(), expected);
        }
    }
}
