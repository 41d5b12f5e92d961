//! `DingTalkError`: every way a DingTalk call can fail, classified into an [`ErrorKind`] so
//! that sync code matches on kinds, never on bare errcodes. Never holds a token or secret:
//! URLs (which carry `access_token` / `appsecret`) are stripped from transport errors.

use std::fmt;

/// What went wrong, as the sync engine needs to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Connection refused/reset/dropped, TLS, DNS.
    Transport,
    /// No answer within the request timeout.
    Timeout,
    /// An HTTP status other than 200.
    Http,
    /// A body that is not the JSON envelope (e.g. the IP-block HTML page).
    NotJson,
    /// errcode -1: system busy.
    Busy,
    /// 90018 / 90002 / 90005 / 90006: throttled.
    Throttled,
    /// 90020: the org's monthly quota is spent.
    QuotaExhausted,
    /// 40014 / 42001 / 40001 / 41001: the access token is not accepted.
    TokenInvalid,
    /// 40089 / 90004: wrong AppKey or AppSecret.
    Credentials,
    /// 88 / 60011 / 60020 / 50002 / 50004 / 43007: permission, IP whitelist, scope.
    Permission,
    /// A parameter DingTalk refused (400002, 40035, 600xx name/mobile rules, ...), or one
    /// dingsync refused before sending.
    Validation,
    /// 40022: a user's mobile cannot be changed through the API.
    MobileNotUpdatable,
    /// 60102: the userid exists.
    UserIdExists,
    /// 60104 / 60107: the mobile exists.
    MobileExists,
    /// 60106 / 40101: the email exists.
    EmailExists,
    /// 40100: the telephone (extension) exists.
    TelephoneExists,
    /// 60021: a sibling department has the name.
    DeptNameExists,
    /// 60121 / 33012 / 40003 / 60111: no such user.
    UserNotFound,
    /// 60003: no such department.
    DeptNotFound,
    /// 60004: the parent department does not exist.
    ParentNotFound,
    /// 60005: the department has members.
    DeptHasMembers,
    /// 60006: the department has sub-departments.
    DeptHasChildren,
    /// 60007 / 60018: the root department cannot be changed.
    RootProtected,
    /// 60010: the move would make a cycle.
    Cycle,
    /// 40103: an invitation was sent instead.
    InvitationPending,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// Classifies an errcode.
    pub fn from_errcode(errcode: i64) -> Self {
        match errcode {
            -1 => Self::Busy,
            90018 | 90002 | 90005 | 90006 => Self::Throttled,
            90020 => Self::QuotaExhausted,
            40014 | 42001 | 40001 | 41001 => Self::TokenInvalid,
            40089 | 90004 => Self::Credentials,
            88 | 60011 | 60020 | 50002 | 50004 | 43007 => Self::Permission,
            40022 => Self::MobileNotUpdatable,
            60102 => Self::UserIdExists,
            60104 | 60107 => Self::MobileExists,
            60106 | 40101 => Self::EmailExists,
            40100 => Self::TelephoneExists,
            60021 => Self::DeptNameExists,
            60121 | 33012 | 40003 | 60111 => Self::UserNotFound,
            60003 => Self::DeptNotFound,
            60004 => Self::ParentNotFound,
            60005 => Self::DeptHasMembers,
            60006 => Self::DeptHasChildren,
            60007 | 60018 => Self::RootProtected,
            60010 => Self::Cycle,
            40103 => Self::InvitationPending,
            400002 | 40035 | 40008 | 40009 | 40011 | 40031 | 40048 | 40056 | 40068 | 40069
            | 40104 | 45002 | 34016 | 60001 | 60002 | 60009 | 60103 | 60105 | 60112 | 12150 => {
                Self::Validation
            }
            _ => Self::Other,
        }
    }

    /// Whether the same call may succeed later without anything changing.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::Transport
                | Self::Timeout
                | Self::NotJson
                | Self::Busy
                | Self::Throttled
                | Self::TokenInvalid
        )
    }
}

/// A failed DingTalk call.
#[derive(Clone, Debug)]
pub struct DingTalkError {
    /// The class.
    pub kind: ErrorKind,
    /// The API path (`http.route`), e.g. `topapi/v2/user/create`.
    pub route: &'static str,
    /// DingTalk's errcode, when it answered with one.
    pub errcode: Option<i64>,
    /// DingTalk's errmsg, or what went wrong.
    pub message: String,
    /// `sub_code` (errcode 88).
    pub sub_code: Option<String>,
    /// DingTalk's request_id, for support tickets.
    pub request_id: Option<String>,
    /// The HTTP status, when it was not 200.
    pub http_status: Option<u16>,
}

impl DingTalkError {
    /// An error of `kind` with a message and nothing else.
    pub fn new(kind: ErrorKind, route: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            route,
            errcode: None,
            message: message.into(),
            sub_code: None,
            request_id: None,
            http_status: None,
        }
    }

    /// An errcode answer.
    pub fn api(route: &'static str, errcode: i64, message: String) -> Self {
        Self {
            errcode: Some(errcode),
            ..Self::new(ErrorKind::from_errcode(errcode), route, message)
        }
    }

    /// A transport failure; the URL (which holds the token or secret) is dropped.
    pub fn transport(route: &'static str, error: reqwest::Error) -> Self {
        let kind = if error.is_timeout() {
            ErrorKind::Timeout
        } else {
            ErrorKind::Transport
        };
        let error = error.without_url();
        let mut message = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Self::new(kind, route, message)
    }

    /// Whether retrying later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self.kind {
            ErrorKind::Http => self.http_status.is_some_and(|s| s >= 500 || s == 429),
            kind => kind.is_retryable(),
        }
    }
}

impl fmt::Display for DingTalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.route)?;
        match (self.errcode, self.http_status) {
            (Some(code), _) => write!(f, "errcode {code} {}", self.message)?,
            (None, Some(status)) => write!(f, "HTTP {status} {}", self.message)?,
            (None, None) => write!(f, "{}", self.message)?,
        }
        if let Some(sub_code) = &self.sub_code {
            write!(f, " (sub_code {sub_code})")?;
        }
        Ok(())
    }
}

impl std::error::Error for DingTalkError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errcodes_classify_as_the_issue_lists() {
        let retryable = [-1, 90018, 90002, 90005, 90006, 40014, 42001];
        for code in retryable {
            assert!(ErrorKind::from_errcode(code).is_retryable(), "{code}");
        }
        let permanent = [
            400002, 40035, 60001, 60009, 60103, 60112, 60102, 60104, 60106, 60021, 60121, 60003,
            88, 60011, 60020, 50002, 50004, 40089,
        ];
        for code in permanent {
            assert!(!ErrorKind::from_errcode(code).is_retryable(), "{code}");
        }
        assert_eq!(ErrorKind::from_errcode(60104), ErrorKind::MobileExists);
        assert_eq!(ErrorKind::from_errcode(60005), ErrorKind::DeptHasMembers);
    }

    #[test]
    fn http_errors_retry_only_on_5xx_and_429() {
        let mut error = DingTalkError::new(ErrorKind::Http, "gettoken", "bad gateway");
        error.http_status = Some(502);
        assert!(error.is_retryable());
        error.http_status = Some(404);
        assert!(!error.is_retryable());
        assert_eq!(error.to_string(), "gettoken: HTTP 404 bad gateway");
    }
}
