//! Secret values: credentials that must never reach a log line, an error message or `Debug`.
//!
//! Owns the `Secret` newtype and reading secrets from files (`*_file` config keys, systemd
//! `LoadCredential=`) with a permission check. It does not decide where secrets come from;
//! `config` does.

use std::fmt;
use std::path::{Path, PathBuf};

/// A secret string. `Debug` and `Display` print `***`; the value is reachable only through
/// [`Secret::expose`], so every place that uses it is visible in a grep.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one call that sends it (HTTP body, hash input).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("***")
    }
}

/// Why a secret file could not be used. Never carries the file's content.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Group or others may read the file.
    #[error(
        "{path} is readable by group or others (mode {mode:o}); run `chmod 600` on it \
         or set allow_insecure_secret_files = true"
    )]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file holds nothing once the trailing newline is trimmed.
    #[error("{path} is empty")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// Reads a secret from `path`, trimming one trailing newline (`\n` or `\r\n`).
/// Refuses a file that group or others can read unless `allow_insecure` is set.
pub fn read_secret_file(path: &Path, allow_insecure: bool) -> Result<Secret, SecretFileError> {
    let read_error = |source| SecretFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(read_error)?;
    let mode = permission_bits(&metadata);
    if !allow_insecure && mode & 0o077 != 0 {
        return Err(SecretFileError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    let mut value = std::fs::read_to_string(path).map_err(read_error)?;
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    if value.is_empty() {
        return Err(SecretFileError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(Secret(value))
}

#[cfg(unix)]
fn permission_bits(metadata: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    metadata.permissions().mode() & 0o777
}

#[cfg(not(unix))]
fn permission_bits(_metadata: &std::fs::Metadata) -> u32 {
    0o600
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    fn file_with(content: &str, mode: u32) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(content.as_bytes()).unwrap();
        std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        file
    }

    #[test]
    fn debug_and_display_hide_the_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "***");
        assert_eq!(format!("{secret}"), "***");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"***\"");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn file_is_read_and_trailing_newline_trimmed() {
        let file = file_with("s3cret\r\n", 0o600);
        assert_eq!(
            read_secret_file(file.path(), false).unwrap().expose(),
            "s3cret"
        );
        let file = file_with("two\nlines\n", 0o400);
        assert_eq!(
            read_secret_file(file.path(), false).unwrap().expose(),
            "two\nlines"
        );
    }

    #[test]
    fn open_file_is_refused_unless_allowed() {
        let file = file_with("s3cret", 0o644);
        let error = read_secret_file(file.path(), false).unwrap_err();
        assert!(matches!(
            error,
            SecretFileError::TooOpen { mode: 0o644, .. }
        ));
        assert!(!error.to_string().contains("s3cret"));
        assert_eq!(
            read_secret_file(file.path(), true).unwrap().expose(),
            "s3cret"
        );
    }

    #[test]
    fn empty_and_missing_files_are_errors() {
        let file = file_with("\n", 0o600);
        assert!(matches!(
            read_secret_file(file.path(), false),
            Err(SecretFileError::Empty { .. })
        ));
        assert!(matches!(
            read_secret_file(Path::new("/nonexistent/secret"), false),
            Err(SecretFileError::Read { .. })
        ));
    }
}
