//! Request parameters as DingTalk accepts them: a JSON body or a form body, numbers and
//! booleans written either as JSON values or as strings, lists as comma-separated strings or
//! JSON arrays. Lenient on purpose: the simulator must accept whatever the real API accepts.

use serde_json::{Map, Value};

use super::ApiFail;

/// errcode for a missing or malformed parameter.
pub const INVALID_PARAM: i64 = 40035;

/// The parameters of one call.
#[derive(Clone, Debug, Default)]
pub struct Params(pub Map<String, Value>);

impl Params {
    /// Parses a body: JSON object when it looks like one, else form-urlencoded.
    pub fn from_body(body: &[u8]) -> Result<Self, ApiFail> {
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiFail::new(INVALID_PARAM, "body is not UTF-8"))?;
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Ok(Self::default());
        }
        if trimmed.starts_with('{') {
            return match serde_json::from_str::<Value>(trimmed) {
                Ok(Value::Object(map)) => Ok(Self(map)),
                _ => Err(ApiFail::new(INVALID_PARAM, "body is not a JSON object")),
            };
        }
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(trimmed)
            .map_err(|_| ApiFail::new(INVALID_PARAM, "body is neither JSON nor a form"))?;
        Ok(Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        ))
    }

    fn present(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    /// A string (numbers are turned into their text).
    pub fn str(&self, key: &str) -> Option<String> {
        match self.present(key)? {
            Value::String(text) => Some(text.clone()),
            Value::Number(number) => Some(number.to_string()),
            Value::Bool(flag) => Some(flag.to_string()),
            other => Some(other.to_string()),
        }
    }

    /// A required non-empty string.
    pub fn required_str(&self, key: &str) -> Result<String, ApiFail> {
        match self.str(key) {
            Some(text) if !text.is_empty() => Ok(text),
            _ => Err(ApiFail::new(INVALID_PARAM, format!("缺少参数 {key}"))),
        }
    }

    /// An integer, from a number or a numeric string.
    pub fn i64(&self, key: &str) -> Result<Option<i64>, ApiFail> {
        match self.present(key) {
            None => Ok(None),
            Some(Value::Number(number)) => number
                .as_i64()
                .map(Some)
                .ok_or_else(|| ApiFail::new(INVALID_PARAM, format!("{key} is not an integer"))),
            Some(Value::String(text)) if text.trim().is_empty() => Ok(None),
            Some(Value::String(text)) => text
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| ApiFail::new(INVALID_PARAM, format!("{key} is not an integer"))),
            Some(_) => Err(ApiFail::new(
                INVALID_PARAM,
                format!("{key} is not an integer"),
            )),
        }
    }

    /// A required integer.
    pub fn required_i64(&self, key: &str) -> Result<i64, ApiFail> {
        self.i64(key)?
            .ok_or_else(|| ApiFail::new(INVALID_PARAM, format!("缺少参数 {key}")))
    }

    /// A boolean, from a JSON boolean or "true"/"false".
    pub fn bool(&self, key: &str) -> Result<Option<bool>, ApiFail> {
        match self.present(key) {
            None => Ok(None),
            Some(Value::Bool(flag)) => Ok(Some(*flag)),
            Some(Value::String(text)) => match text.trim() {
                "true" | "1" => Ok(Some(true)),
                "false" | "0" => Ok(Some(false)),
                _ => Err(ApiFail::new(
                    INVALID_PARAM,
                    format!("{key} is not a boolean"),
                )),
            },
            Some(Value::Number(number)) => Ok(Some(number.as_i64() != Some(0))),
            Some(_) => Err(ApiFail::new(
                INVALID_PARAM,
                format!("{key} is not a boolean"),
            )),
        }
    }

    /// A list of strings: "a,b,c" or ["a","b"].
    pub fn str_list(&self, key: &str) -> Option<Vec<String>> {
        let items: Vec<String> = match self.present(key)? {
            Value::Array(items) => items
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                .collect(),
            Value::String(text) => text.split(',').map(str::to_string).collect(),
            other => vec![other.to_string()],
        };
        Some(
            items
                .into_iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        )
    }

    /// A list of integer ids: "1,2" or [1,2] or ["1","2"].
    pub fn id_list(&self, key: &str) -> Result<Option<Vec<i64>>, ApiFail> {
        let Some(items) = self.str_list(key) else {
            return Ok(None);
        };
        items
            .iter()
            .map(|item| item.parse::<i64>())
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
            .map_err(|_| ApiFail::new(INVALID_PARAM, format!("{key} holds a non-numeric id")))
    }

    /// A JSON object given as an object or as a JSON string (form bodies).
    pub fn object(&self, key: &str) -> Result<Option<Map<String, Value>>, ApiFail> {
        match self.present(key) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(map.clone())),
            Some(Value::String(text)) => match serde_json::from_str(text) {
                Ok(Value::Object(map)) => Ok(Some(map)),
                _ => Err(ApiFail::new(
                    INVALID_PARAM,
                    format!("{key} is not a JSON object"),
                )),
            },
            Some(_) => Err(ApiFail::new(
                INVALID_PARAM,
                format!("{key} is not a JSON object"),
            )),
        }
    }
}
