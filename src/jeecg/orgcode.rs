//! JeecgBoot's department codes (`sys_depart.org_code`, unique): each level adds three
//! characters, a letter and two digits — top level A01, A02, ..., A99, B01, ...; children of
//! A01 are A01A01, A01A02, ... (JeecgBoot's `YouBianCodeUtil`).

/// Characters one level adds.
pub const LEVEL_LEN: usize = 3;

/// The code after `code`'s last level (A01 -> A02, A99 -> B01), or `None` after Z99.
fn next_segment(segment: &str) -> Option<String> {
    let mut chars = segment.chars();
    let letter = chars.next()?;
    let number: u32 = chars.as_str().parse().ok()?;
    if !letter.is_ascii_uppercase() {
        return None;
    }
    if number < 99 {
        return Some(format!("{letter}{:02}", number + 1));
    }
    let next = char::from_u32(letter as u32 + 1).filter(char::is_ascii_uppercase)?;
    Some(format!("{next}01"))
}

/// The next free code among `siblings` (the codes of the other children of the parent whose
/// code is `parent`; "" for the top level). Codes not of the parent's shape are ignored.
/// `taken` is asked for every candidate, so codes used elsewhere (real data is not clean) are
/// skipped. `None` when the level is full.
pub fn next_code(parent: &str, siblings: &[&str], taken: impl Fn(&str) -> bool) -> Option<String> {
    let highest = siblings
        .iter()
        .filter_map(|code| code.strip_prefix(parent))
        .filter(|rest| rest.len() == LEVEL_LEN)
        .max();
    let mut segment = match highest {
        Some(rest) => next_segment(rest)?,
        None => "A01".to_string(),
    };
    loop {
        let candidate = format!("{parent}{segment}");
        if !taken(&candidate) {
            return Some(candidate);
        }
        segment = next_segment(&segment)?;
    }
}

/// The code of a descendant after its subtree moved from `old_prefix` to `new_prefix`.
pub fn rebase(code: &str, old_prefix: &str, new_prefix: &str) -> Option<String> {
    code.strip_prefix(old_prefix)
        .map(|rest| format!("{new_prefix}{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_codes_follow_jeecgboot() {
        let none = |_: &str| false;
        assert_eq!(next_code("", &[], none).as_deref(), Some("A01"));
        assert_eq!(next_code("", &["A01", "A02"], none).as_deref(), Some("A03"));
        assert_eq!(
            next_code("A01", &["A01A05", "A01A06"], none).as_deref(),
            Some("A01A07")
        );
        assert_eq!(
            next_code("A01", &["A01A99"], none).as_deref(),
            Some("A01B01")
        );
        assert_eq!(next_code("A01", &["A01Z99"], none), None);
        // A code taken elsewhere is skipped.
        assert_eq!(
            next_code("A02", &["A02A01"], |c| c == "A02A02").as_deref(),
            Some("A02A03")
        );
    }

    #[test]
    fn moved_subtrees_are_rebased() {
        assert_eq!(
            rebase("A01A05A01", "A01A05", "A02A03").as_deref(),
            Some("A02A03A01")
        );
        assert_eq!(rebase("A03", "A01", "A02"), None);
    }
}
