//! Passwords: the complexity rule, and argon2id hashing (PHC strings, per-password salt).
//!
//! The rule (MLPS level 3 practice): at least 12 characters, at least three of lower case, upper
//! case, digits and symbols, not containing the user name, and not a common password dressed up:
//! the password, lower-cased, with look-alike digits and symbols read as letters (`P@ssw0rd`) and
//! with the digits and symbols around it removed (`Password123!` → `password`), must not be one
//! of the 10,000 most common passwords (`common-passwords.txt`, compiled in: the top of the
//! xato.net list as the zxcvbn project ships it, MIT licence), nor a run of one character, a
//! keyboard row or an alphabet or digit sequence.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

pub const MIN_LEN: usize = 12;

/// Why a password is refused, or `Ok`.
pub fn check_complexity(password: &str, username: &str) -> Result<(), String> {
    if password.chars().count() < MIN_LEN {
        return Err(format!("must be at least {MIN_LEN} characters"));
    }
    if password.chars().count() > 256 {
        return Err("must be at most 256 characters".into());
    }
    let classes = [
        password.chars().any(|c| c.is_lowercase()),
        password.chars().any(|c| c.is_uppercase()),
        password.chars().any(|c| c.is_ascii_digit()),
        password.chars().any(|c| !c.is_alphanumeric()),
    ];
    if classes.iter().filter(|c| **c).count() < 3 {
        return Err("must mix at least three of: lower case, upper case, digits, symbols".into());
    }
    if !username.is_empty() && password.to_lowercase().contains(&username.to_lowercase()) {
        return Err("must not contain the user name".into());
    }
    if is_common(password) {
        return Err(
            "is a common password, or one with digits or symbols added; choose a less guessable one"
                .into(),
        );
    }
    Ok(())
}

/// The bundled list of the most common passwords, one a line, lower case.
const COMMON: &str = include_str!("common-passwords.txt");

fn common_set() -> &'static std::collections::HashSet<&'static str> {
    static SET: std::sync::OnceLock<std::collections::HashSet<&'static str>> =
        std::sync::OnceLock::new();
    SET.get_or_init(|| {
        COMMON
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect()
    })
}

/// Whether `password` is a common password, or one decorated with digits, symbols or
/// look-alike characters.
pub fn is_common(password: &str) -> bool {
    let lower = password.to_lowercase();
    let unleet: String = lower
        .chars()
        .map(|c| match c {
            '0' => 'o',
            '1' | '!' | '|' => 'i',
            '3' => 'e',
            '4' | '@' => 'a',
            '5' | '$' => 's',
            '7' | '+' => 't',
            '8' => 'b',
            '9' => 'g',
            _ => c,
        })
        .collect();
    let core = |s: &str| -> String {
        s.trim_matches(|c: char| !c.is_alphabetic())
            .chars()
            .filter(|c| !matches!(c, '-' | '_' | '.' | ' '))
            .collect()
    };
    let set = common_set();
    let candidates = [
        lower.clone(),
        core(&lower),
        unleet.clone(),
        core(&unleet),
        lower
            .trim_matches(|c: char| !c.is_alphanumeric())
            .to_string(),
    ];
    candidates
        .iter()
        .any(|c| c.chars().count() >= 3 && (set.contains(c.as_str()) || is_sequence(c)))
        || is_sequence(&lower)
}

/// One character repeated, or a stretch of a keyboard row, the alphabet or the digits.
fn is_sequence(s: &str) -> bool {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() < 3 {
        return false;
    }
    if chars.iter().all(|c| *c == chars[0]) {
        return true;
    }
    const RUNS: &[&str] = &[
        "abcdefghijklmnopqrstuvwxyz",
        "01234567890",
        "qwertyuiop",
        "asdfghjkl",
        "zxcvbnm",
        "1qaz2wsx3edc4rfv5tgb6yhn7ujm",
        "qazwsxedcrfvtgbyhnujmikolp",
    ];
    RUNS.iter().any(|run| {
        let rev: String = run.chars().rev().collect();
        run.contains(s) || rev.contains(s)
    })
}

fn hasher() -> Argon2<'static> {
    // OWASP's argon2id minimum: 19 MiB, 2 iterations, 1 lane.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`) of `password`.
pub fn hash(password: &str) -> Result<String, String> {
    let salt_bytes: [u8; 16] = crate::crypto::random_array();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| e.to_string())?;
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `password` matches the PHC string `phc` (false for a malformed hash).
pub fn verify(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => hasher()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A real hash of a password nobody has, to spend the same time on unknown user names.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash(&generate()).unwrap_or_default())
}

/// A random password that passes the rule (for one-time initial credentials).
pub fn generate() -> String {
    const CHARS: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let bytes: [u8; 16] = crate::crypto::random_array();
    let body: String = bytes
        .iter()
        .map(|b| CHARS[*b as usize % CHARS.len()] as char)
        .collect();
    format!("{body}-Aa9")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complexity_rule_names_what_is_missing() {
        assert!(check_complexity("short1A!", "u")
            .unwrap_err()
            .contains("12"));
        assert!(check_complexity("alllowercaseletters", "u")
            .unwrap_err()
            .contains("three"));
        assert!(check_complexity("Operator-2026-x", "operator")
            .unwrap_err()
            .contains("user name"));
        assert!(check_complexity("Correct-Horse-42", "alice").is_ok());
        for common in [
            "Password123!",
            "P@ssw0rd2026!",
            "Qwerty123456!",
            "Iloveyou2026!!",
            "Aaaaaaaaaaaa1!",
        ] {
            assert!(
                check_complexity(common, "alice")
                    .unwrap_err()
                    .contains("common"),
                "{common}"
            );
        }
        assert!(check_complexity(&generate(), "alice").is_ok());
    }

    #[test]
    fn hashes_are_argon2id_and_verify() {
        let h = hash("Correct-Horse-42").unwrap();
        assert!(h.starts_with("$argon2id$v=19$"), "{h}");
        assert!(verify("Correct-Horse-42", &h));
        assert!(!verify("Correct-Horse-43", &h));
        assert!(!verify("x", "not a hash"));
    }
}
