//! The validators behind [`super::scan`]: what makes a run of digits a resident ID number, a
//! mobile number or a bank card number, and not an order number or a timestamp.
//!
//! Kept by hand, because no crate does it: the GB 11643-1999 rules (province code, a real birth
//! date that is not in the future, the ISO 7064 MOD 11-2 check character with its GB weights and
//! `X`), and the mainland mobile number plan. Dates are `jiff`'s (a 30 February is refused);
//! the Luhn check is the `luhn` crate's.

use jiff::civil::Date;

/// First two digits of a resident ID number: the province-level divisions of GB/T 2260
/// (11 Beijing … 65 Xinjiang, 71 Taiwan, 81/82 Hong Kong/Macao, 83 residence permits for
/// Taiwan residents, 91 some older foreign-resident ranges).
const PROVINCES: [u8; 36] = [
    11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50, 51, 52,
    53, 54, 61, 62, 63, 64, 65, 71, 81, 82, 83, 91,
];

/// GB 11643 weights of the first 17 digits (2^(18-i) mod 11).
const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];

/// The check character for a weighted sum mod 11.
const CHECK: [u8; 11] = *b"10X98765432";

fn digits_only(s: &[u8]) -> bool {
    s.iter().all(u8::is_ascii_digit)
}

fn num(s: &[u8]) -> i32 {
    s.iter().fold(0i32, |n, d| n * 10 + i32::from(d - b'0'))
}

fn province_ok(s: &[u8]) -> bool {
    PROVINCES.contains(&(((s[0] - b'0') * 10) + (s[1] - b'0')))
}

/// A real calendar date, not after `today` and not before 1900.
fn birth_date_ok(year: i32, month: i32, day: i32, today: Date) -> bool {
    if !(1900..=9999).contains(&year) {
        return false;
    }
    let (Ok(y), Ok(m), Ok(d)) = (i16::try_from(year), i8::try_from(month), i8::try_from(day))
    else {
        return false;
    };
    match Date::new(y, m, d) {
        Ok(date) => date <= today,
        Err(_) => false,
    }
}

/// An 18-character resident ID number (GB 11643-1999): 6-digit area code, birth date
/// `YYYYMMDD`, 3-digit sequence, and the MOD 11-2 check character (`0`–`9` or `X`/`x`).
pub fn id18(s: &[u8], today: Date) -> bool {
    if s.len() != 18 || !digits_only(&s[..17]) || !province_ok(s) {
        return false;
    }
    let last = s[17].to_ascii_uppercase();
    if !(last.is_ascii_digit() || last == b'X') {
        return false;
    }
    if !birth_date_ok(num(&s[6..10]), num(&s[10..12]), num(&s[12..14]), today) {
        return false;
    }
    let sum: u32 = s[..17]
        .iter()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    CHECK[(sum % 11) as usize] == last
}

/// The first-generation 15-digit ID number: area code, birth date `YYMMDD` (19YY), 3-digit
/// sequence; no check digit.
pub fn id15(s: &[u8], today: Date) -> bool {
    s.len() == 15
        && digits_only(s)
        && province_ok(s)
        && birth_date_ok(1900 + num(&s[6..8]), num(&s[8..10]), num(&s[10..12]), today)
}

/// A mainland mobile number: 11 digits, `1` then `3`–`9`.
pub fn mobile(s: &[u8]) -> bool {
    s.len() == 11 && digits_only(s) && s[0] == b'1' && (b'3'..=b'9').contains(&s[1])
}

/// A bank card number: 13–19 digits with a valid Luhn check digit, and either an issuer prefix
/// of the networks used in China (`62` UnionPay, `4` Visa, `5` Mastercard, `3` JCB/Amex) or
/// `context` (the value sits under a key, or after a word, that names a card or bank account).
pub fn bank_card(s: &[u8], context: bool) -> bool {
    if !(13..=19).contains(&s.len()) || !digits_only(s) {
        return false;
    }
    let bin = s.starts_with(b"62") || matches!(s[0], b'3' | b'4' | b'5');
    // All digits: valid UTF-8.
    (bin || context) && luhn::valid(std::str::from_utf8(s).unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> Date {
        Date::new(2026, 12, 4).unwrap()
    }

    #[test]
    fn id18_with_a_valid_check_character_is_recognised() {
        // The GB 11643 sample number, and one whose check character is X.
        assert!(id18(b"11010519491231002X", today()));
        assert!(id18(b"11010519491231002x", today()));
        assert!(id18(b"110101199003077777", today()) == check_ok(b"110101199003077777"));
        assert!(id18(b"440308199901010012", today()) == check_ok(b"440308199901010012"));
    }

    /// Independent re-computation for the asserts above.
    fn check_ok(s: &[u8]) -> bool {
        let mut sum = 0u32;
        for (i, d) in s[..17].iter().enumerate() {
            sum += u32::from(d - b'0') * (2u32.pow(17 - i as u32) % 11);
        }
        b"10X98765432"[(sum % 11) as usize] == s[17]
    }

    #[test]
    fn id18_with_a_wrong_check_character_is_not_an_id() {
        assert!(!id18(b"110105194912310021", today()));
        assert!(!id18(b"110105194912310029", today()));
    }

    #[test]
    fn id18_needs_a_real_birth_date_in_the_past() {
        // 30 February, month 13, a birth date after today, and 1899.
        for s in [
            b"110105194902300021".as_slice(),
            b"110105194913010021",
            b"110105202712310021",
            b"110105189912310021",
        ] {
            let mut v = s.to_vec();
            // Give each a correct check character so only the date can fail.
            let sum: u32 = v[..17]
                .iter()
                .zip(WEIGHTS)
                .map(|(d, w)| u32::from(d - b'0') * w)
                .sum();
            v[17] = CHECK[(sum % 11) as usize];
            assert!(!id18(&v, today()), "{}", String::from_utf8_lossy(&v));
        }
    }

    #[test]
    fn id18_needs_a_province_code() {
        let mut v = b"99010519491231002".to_vec();
        let sum: u32 = v
            .iter()
            .zip(WEIGHTS)
            .map(|(d, w)| u32::from(d - b'0') * w)
            .sum();
        v.push(CHECK[(sum % 11) as usize]);
        assert!(!id18(&v, today()));
    }

    #[test]
    fn order_numbers_and_timestamps_are_not_ids() {
        // An 18-digit order number (date-like prefix, but no valid birth date in place).
        assert!(!id18(b"202412041234567890", today()));
        assert!(!id15(b"202412041234567", today()));
        // A millisecond timestamp.
        assert!(!id15(b"173335000000012", today()));
    }

    #[test]
    fn the_15_digit_form_has_a_real_date() {
        assert!(id15(b"110105491231002", today()));
        assert!(!id15(b"110105490231002", today()));
        assert!(!id15(b"11010549123100X", today()));
    }

    #[test]
    fn mobile_numbers() {
        assert!(mobile(b"13812345678"));
        assert!(mobile(b"19912345678"));
        assert!(!mobile(b"12812345678"));
        assert!(!mobile(b"1381234567"));
        assert!(!mobile(b"23812345678"));
    }

    #[test]
    fn bank_cards_need_luhn_and_a_prefix_or_context() {
        // Luhn-valid UnionPay and Visa test numbers.
        assert!(bank_card(b"6222021234567890120", false) == luhn::valid("6222021234567890120"));
        assert!(bank_card(b"4111111111111111", false));
        assert!(bank_card(b"6011111111111117", true));
        assert!(
            !bank_card(b"6011111111111117", false),
            "no BIN prefix, no context"
        );
        assert!(!bank_card(b"4111111111111112", true), "Luhn fails");
        assert!(!bank_card(b"411111111111", true), "too short");
    }
}
