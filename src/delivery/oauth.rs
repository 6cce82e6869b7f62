//! OAuth 2.0 client credentials for receivers that want a bearer token (API.md §13): one
//! token per endpoint, fetched once and shared by its attempts until shortly before it
//! expires ([`refresh_at`]), fetched again once when the receiver answers 401.
//!
//! Invariants: at most one fetch per endpoint is under way (attempts wait for it rather than
//! each fetching); a token-endpoint failure is the attempt's `auth_error`, never the
//! receiver's failure; the client secret and the tokens never reach an error message or a log
//! line. No crate here: `oauth2` brings its own HTTP client and type machinery for the one
//! POST this needs, and the token must go through the endpoint's own client (its TLS identity
//! and the SSRF guard).

use std::time::Duration;

use serde::Deserialize;

use crate::model::{now_millis, EndpointAuth, UnixMillis};

/// A token that says nothing of its lifetime is used this long at most.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// The refresh margin's ceiling.
const MAX_MARGIN: Duration = Duration::from_secs(30);
/// Most bytes of a token response read.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;

/// When a token obtained at `obtained` that lives `expires_in` seconds is refreshed: once less
/// than a tenth of its lifetime (at most 30 s) remains.
pub fn refresh_at(obtained: UnixMillis, expires_in: Option<u64>) -> UnixMillis {
    let life = expires_in.map_or(DEFAULT_LIFETIME, Duration::from_secs);
    let margin = (life / 10).min(MAX_MARGIN);
    obtained.saturating_add((life - margin).as_millis().min(i64::MAX as u128) as i64)
}

#[derive(Clone)]
struct Token {
    value: String,
    refresh_at: UnixMillis,
}

/// One endpoint's token.
#[derive(Default)]
pub struct TokenCache {
    token: tokio::sync::Mutex<Option<Token>>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<f64>,
}

impl TokenCache {
    /// A token to send: the cached one while it is fresh, else a new one. `rejected`: the
    /// receiver refused this one with a 401, so it is not used again.
    pub async fn token(
        &self,
        client: &reqwest::Client,
        auth: &EndpointAuth,
        rejected: Option<&str>,
    ) -> Result<String, String> {
        let mut cached = self.token.lock().await;
        let now = now_millis();
        if let Some(t) = cached.as_ref() {
            if t.refresh_at > now && rejected != Some(t.value.as_str()) {
                return Ok(t.value.clone());
            }
        }
        let token = fetch(client, auth).await?;
        *cached = Some(token.clone());
        Ok(token.value)
    }
}

async fn fetch(client: &reqwest::Client, auth: &EndpointAuth) -> Result<Token, String> {
    let EndpointAuth::Oauth2ClientCredentials {
        token_url,
        client_id,
        client_secret,
        scope,
    } = auth;
    let mut form: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
    if let Some(scope) = scope {
        form.push(("scope", scope));
    }
    let obtained = now_millis();
    // client_secret_basic: the method every token endpoint must support (RFC 6749 §2.3.1).
    let response = client
        .post(token_url)
        .basic_auth(
            form_encode(client_id),
            Some(form_encode(client_secret.expose())),
        )
        .form(&form)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| format!("token endpoint: {}", super::error_chain(&e)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("token endpoint answered {}", status.as_u16()));
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("token endpoint: {}", super::error_chain(&e)))?;
    if body.len() > MAX_TOKEN_RESPONSE {
        return Err("token endpoint: response too large".into());
    }
    let parsed: TokenResponse = serde_json::from_slice(&body)
        .map_err(|_| "token endpoint: response is not a token (no access_token)".to_string())?;
    if parsed
        .token_type
        .as_deref()
        .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
    {
        return Err("token endpoint: token_type is not bearer".into());
    }
    if parsed.access_token.is_empty() {
        return Err("token endpoint: empty access_token".into());
    }
    let expires_in = parsed
        .expires_in
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(|s| s as u64);
    Ok(Token {
        value: parsed.access_token,
        refresh_at: refresh_at(obtained, expires_in),
    })
}

/// RFC 6749 §2.3.1: the client id and secret are form-encoded before Basic encoding.
fn form_encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refreshed_once_a_tenth_of_the_lifetime_is_left_at_most_thirty_seconds() {
        assert_eq!(refresh_at(0, Some(100)), 90_000);
        assert_eq!(refresh_at(0, Some(3600)), 3_570_000);
        assert_eq!(refresh_at(1_000, Some(10)), 10_000);
        assert_eq!(refresh_at(0, None), 3_570_000);
        assert_eq!(refresh_at(0, Some(0)), 0);
    }

    #[test]
    fn credentials_are_form_encoded_for_basic() {
        assert_eq!(form_encode("a b:c"), "a+b%3Ac");
    }
}
