//! The LLM client's configuration, read from the environment.
//!
//! Owns the names of the variables (`OPENAI_BASE_URL`, `OPENAI_API_KEY`, `TEMPEST_LLM_MODEL`
//! and the optional limits) and their validation. It never opens a connection: a bad value is
//! reported here, naming the variable, before any request is made.

use hyper::Uri;
use std::fmt;
use std::time::Duration;
use tempest_engine::ratelimit::Limit;

pub const VAR_BASE_URL: &str = "OPENAI_BASE_URL";
pub const VAR_API_KEY: &str = "OPENAI_API_KEY";
pub const VAR_MODEL: &str = "TEMPEST_LLM_MODEL";
pub const VAR_TIMEOUT_MS: &str = "TEMPEST_LLM_TIMEOUT_MS";
pub const VAR_REQUESTS_PER_MINUTE: &str = "TEMPEST_LLM_REQUESTS_PER_MINUTE";
pub const VAR_TOKENS_PER_MINUTE: &str = "TEMPEST_LLM_TOKENS_PER_MINUTE";
pub const VAR_CONCURRENCY_MAX: &str = "TEMPEST_LLM_CONCURRENCY_MAX";

/// How long one request may take, body included, unless `TEMPEST_LLM_TIMEOUT_MS` says
/// otherwise. Long enough for a slow completion of a few thousand tokens.
pub const TIMEOUT_DEFAULT: Duration = Duration::from_secs(120);

/// How long a request may wait locally for room under the rate limits before it fails as
/// rate limited (and the engine retries it durably, later). Short waits are cheaper than a
/// retry; long ones would hold a worker slot for nothing.
pub const LIMITER_WAIT_MAX_DEFAULT: Duration = Duration::from_secs(10);

/// Where and how the client talks to an OpenAI-compatible chat-completions endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// The API root, e.g. `http://127.0.0.1:8080/v1`; requests go to `{base}/chat/completions`.
    pub base_url: Uri,
    /// Sent as a bearer token when set; local servers often need none.
    pub api_key: Option<String>,
    /// The model every request names. Workflows record a logical model name in their
    /// histories (e.g. `sim-model`); which provider model serves it is the deployment's choice.
    pub model: String,
    /// Limit on one request, from sending to the last byte of the answer.
    pub timeout: Duration,
    /// This process's limits for the provider key (`llm:{model}`); `None` fields are unlimited.
    pub limit: Limit,
    /// See `LIMITER_WAIT_MAX_DEFAULT`.
    pub limiter_wait_max: Duration,
}

/// Shows everything but the key, so a logged configuration leaks no secret.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<hidden>"))
            .field("model", &self.model)
            .field("timeout", &self.timeout)
            .field("limit", &self.limit)
            .field("limiter_wait_max", &self.limiter_wait_max)
            .finish()
    }
}

/// A variable is missing or malformed; the message names it and the value at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("environment variable {var} is not set: {hint}")]
    Missing { var: &'static str, hint: &'static str },
    #[error("environment variable {var}={value:?} is invalid: {reason}")]
    Invalid { var: &'static str, value: String, reason: String },
}

impl Config {
    /// A configuration with no limits and default timeouts.
    pub fn new(base_url: &str, model: &str) -> Result<Config, Error> {
        Ok(Config {
            base_url: parse_base_url(base_url)?,
            api_key: None,
            model: parse_model(model)?,
            timeout: TIMEOUT_DEFAULT,
            limit: Limit::default(),
            limiter_wait_max: LIMITER_WAIT_MAX_DEFAULT,
        })
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Config, Error> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, Error> {
        let base_url = lookup(VAR_BASE_URL).ok_or(Error::Missing {
            var: VAR_BASE_URL,
            hint: "set it to the API root of an OpenAI-compatible server, e.g. http://127.0.0.1:8080/v1",
        })?;
        let model = lookup(VAR_MODEL)
            .ok_or(Error::Missing { var: VAR_MODEL, hint: "set it to the model name the provider serves" })?;
        let mut config = Config::new(&base_url, &model)?;
        config.api_key = match lookup(VAR_API_KEY) {
            None => None,
            Some(key) if key.trim().is_empty() => {
                return Err(Error::Invalid {
                    var: VAR_API_KEY,
                    value: key,
                    reason: "it is empty; unset it for a server that needs no key".to_owned(),
                })
            }
            Some(key) if key.chars().any(|c| c.is_control() || c == ' ') => {
                // Never echo a key, even a broken one, into logs.
                return Err(Error::Invalid {
                    var: VAR_API_KEY,
                    value: "<hidden>".to_owned(),
                    reason: "it contains spaces or control characters".to_owned(),
                });
            }
            Some(key) => Some(key),
        };
        if let Some(ms) = parse_positive(&lookup, VAR_TIMEOUT_MS)? {
            config.timeout = Duration::from_millis(ms);
        }
        config.limit = Limit {
            requests_per_minute: parse_positive(&lookup, VAR_REQUESTS_PER_MINUTE)?,
            tokens_per_minute: parse_positive(&lookup, VAR_TOKENS_PER_MINUTE)?,
            concurrency_max: parse_positive(&lookup, VAR_CONCURRENCY_MAX)?
                .map(|n| {
                    u32::try_from(n).map_err(|_| Error::Invalid {
                        var: VAR_CONCURRENCY_MAX,
                        value: n.to_string(),
                        reason: "it is too large".to_owned(),
                    })
                })
                .transpose()?,
        };
        Ok(config)
    }

    /// `{base}/chat/completions`.
    pub fn endpoint(&self) -> Uri {
        let base = self.base_url.to_string();
        let endpoint = format!("{}/chat/completions", base.trim_end_matches('/'));
        endpoint.parse().expect("a valid base URL plus a path is a valid URI")
    }

    /// The rate-limiter key this client counts its requests under.
    pub fn limiter_key(&self) -> String {
        format!("llm:{}", self.model)
    }
}

fn parse_base_url(value: &str) -> Result<Uri, Error> {
    let invalid =
        |reason: &str| Error::Invalid { var: VAR_BASE_URL, value: value.to_owned(), reason: reason.to_owned() };
    let uri: Uri = value.trim().parse().map_err(|e| invalid(&format!("not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        Some(other) => return Err(invalid(&format!("scheme {other:?} is not http or https"))),
        None => return Err(invalid("it has no scheme; write http://HOST:PORT/v1")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("it has no host"));
    }
    if uri.query().is_some() {
        return Err(invalid("it must not have a query string"));
    }
    Ok(uri)
}

fn parse_model(value: &str) -> Result<String, Error> {
    if value.trim().is_empty() {
        return Err(Error::Invalid { var: VAR_MODEL, value: value.to_owned(), reason: "it is empty".to_owned() });
    }
    Ok(value.trim().to_owned())
}

fn parse_positive(lookup: &impl Fn(&str) -> Option<String>, var: &'static str) -> Result<Option<u64>, Error> {
    let Some(value) = lookup(var) else {
        return Ok(None);
    };
    match value.trim().parse::<u64>() {
        Ok(0) => Err(Error::Invalid { var, value, reason: "it must be at least 1".to_owned() }),
        Ok(n) => Ok(Some(n)),
        Err(e) => Err(Error::Invalid { var, value, reason: format!("not a whole number: {e}") }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn full_environment_is_read() {
        let config = Config::from_lookup(lookup(&[
            (VAR_BASE_URL, "http://127.0.0.1:8080/v1/"),
            (VAR_API_KEY, "sk-test"),
            (VAR_MODEL, "gpt-4o-mini"),
            (VAR_TIMEOUT_MS, "5000"),
            (VAR_REQUESTS_PER_MINUTE, "60"),
            (VAR_CONCURRENCY_MAX, "4"),
        ]))
        .unwrap();
        assert_eq!(config.endpoint().to_string(), "http://127.0.0.1:8080/v1/chat/completions");
        assert_eq!(config.api_key.as_deref(), Some("sk-test"));
        assert_eq!(config.timeout, Duration::from_secs(5));
        assert_eq!(config.limit.requests_per_minute, Some(60));
        assert_eq!(config.limit.tokens_per_minute, None);
        assert_eq!(config.limit.concurrency_max, Some(4));
        assert_eq!(config.limiter_key(), "llm:gpt-4o-mini");
    }

    #[test]
    fn debug_output_hides_the_key() {
        let mut config = Config::new("http://localhost:1/v1", "m").unwrap();
        config.api_key = Some("sk-secret".to_owned());
        let text = format!("{config:?}");
        assert!(!text.contains("sk-secret") && text.contains("<hidden>"), "{text}");
    }

    #[test]
    fn missing_base_url_names_the_variable() {
        let error = Config::from_lookup(lookup(&[(VAR_MODEL, "m")])).unwrap_err();
        assert!(matches!(error, Error::Missing { var: VAR_BASE_URL, .. }));
        assert!(error.to_string().contains("OPENAI_BASE_URL"), "{error}");
    }

    #[test]
    fn missing_model_names_the_variable() {
        let error = Config::from_lookup(lookup(&[(VAR_BASE_URL, "http://localhost:1/v1")])).unwrap_err();
        assert!(error.to_string().contains("TEMPEST_LLM_MODEL"), "{error}");
    }

    #[test]
    fn malformed_values_name_variable_and_value() {
        let cases = [
            (VAR_BASE_URL, "localhost:8080"),
            (VAR_BASE_URL, "ftp://host/v1"),
            (VAR_BASE_URL, "not a url"),
            (VAR_TIMEOUT_MS, "soon"),
            (VAR_REQUESTS_PER_MINUTE, "0"),
            (VAR_API_KEY, ""),
        ];
        for (var, value) in cases {
            let mut vars = vec![(VAR_BASE_URL, "http://localhost:1/v1"), (VAR_MODEL, "m")];
            vars.retain(|(k, _)| *k != var);
            vars.push((var, value));
            let error = Config::from_lookup(lookup(&vars)).unwrap_err();
            let text = error.to_string();
            assert!(text.contains(var), "{var}={value:?}: {text}");
            assert!(matches!(error, Error::Invalid { .. }), "{var}={value:?}: {text}");
        }
    }
}
