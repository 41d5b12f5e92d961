//! Phone numbers and e-mails: how they are compared ([`mobile_key`], [`same_mobile`]) and how
//! logs, errors and reports show them ([`mask_mobile`], [`mask_email`], [`mask_value`]). Pure
//! functions; the model and DingTalk's user index both use them.

/// A mobile number as compared (never as sent): spaces and dashes dropped, and a mainland
/// number's `+86` / `0086` prefix too, since DingTalk shows mainland numbers as `+86-138...`
/// in organisations registered outside mainland China (API.md §2.1) while JeecgBoot keeps
/// `138...`.
pub fn mobile_key(mobile: &str) -> std::borrow::Cow<'_, str> {
    if !mobile.contains([' ', '-']) && !mobile.starts_with("+86") && !mobile.starts_with("0086") {
        return std::borrow::Cow::Borrowed(mobile);
    }
    let plain: String = mobile.chars().filter(|c| *c != ' ' && *c != '-').collect();
    let mainland = ["+86", "0086"].iter().find_map(|prefix| {
        plain
            .strip_prefix(prefix)
            .filter(|rest| {
                rest.len() == 11
                    && rest.starts_with('1')
                    && rest.bytes().all(|b| b.is_ascii_digit())
            })
            .map(str::to_string)
    });
    std::borrow::Cow::Owned(mainland.unwrap_or(plain))
}

/// A mobile number for logs and reports: the first three and last four digits
/// (`138****0001`); short numbers are hidden whole.
pub fn mask_mobile(mobile: &str) -> String {
    let digits: Vec<char> = mobile.chars().collect();
    if digits.len() < 8 {
        return "*".repeat(digits.len());
    }
    let head: String = digits[..3].iter().collect();
    let tail: String = digits[digits.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(digits.len() - 7))
}

/// An e-mail as logs show it: `l***@example.com`.
pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".into(),
    }
}

/// A value of `field` as logs and errors show it: phone numbers and e-mails masked, other
/// fields as they are.
pub fn mask_value(field: &str, value: &str) -> String {
    match field {
        "mobile" | "phone" | "telephone" => mask_mobile(value),
        "email" => mask_email(value),
        _ => value.to_string(),
    }
}

/// Whether two mobile numbers are the same number ([`mobile_key`]).
pub fn same_mobile(a: &str, b: &str) -> bool {
    mobile_key(a) == mobile_key(b)
}
