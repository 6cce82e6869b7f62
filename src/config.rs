//! Configuration: the figment layers (compiled-in defaults ← TOML file ← `HOOKD_*` environment),
//! and the checks that a value is usable. This is the only module that reads environment
//! variables or configuration files; everything else receives a validated [`Config`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// The commented default configuration; it is also the lowest configuration layer, so the file
/// users read and the defaults hookd runs with cannot drift apart.
pub const DEFAULT_TOML: &str = include_str!("../config/hookd.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Figment(Box<figment::Error>),
    #[error("configuration: {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

impl From<figment::Error> for ConfigError {
    fn from(e: figment::Error) -> Self {
        ConfigError::Figment(Box::new(e))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub storage: StorageConfig,
    pub delivery: DeliveryConfig,
    pub events: EventsConfig,
    pub operator: OperatorConfig,
    /// Where events come from besides the HTTP API; none by default.
    #[serde(default)]
    pub source: SourceConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub admin_tokens: Vec<String>,
    pub ingest_tokens: Vec<String>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field(
                "admin_tokens",
                &format_args!("[{} redacted]", self.admin_tokens.len()),
            )
            .field(
                "ingest_tokens",
                &format_args!("[{} redacted]", self.ingest_tokens.len()),
            )
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    pub path: PathBuf,
    pub sync: bool,
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    #[serde(with = "humantime_serde")]
    pub prune_interval: Duration,
    pub min_free_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub retry_schedule: Vec<HumanDuration>,
    pub retry_jitter: f64,
    pub max_concurrency: u32,
    pub max_endpoints_per_tenant: u32,
    pub signature_header: String,
    #[serde(with = "humantime_serde")]
    pub secret_overlap: Duration,
    /// An endpoint failing continuously this long is paused (`failing_too_long`); 0: never.
    #[serde(with = "humantime_serde")]
    pub pause_after: Duration,
    pub allow_http: bool,
    pub allow_private_networks: bool,
    /// A PEM bundle trusted besides the system's roots; empty: none.
    pub ca_file: PathBuf,
    /// An HTTP CONNECT proxy (`http://host:port`) for every endpoint without its own; empty:
    /// none. `HTTP(S)_PROXY` variables are ignored.
    pub proxy: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    pub types: Vec<String>,
    /// A directory of `TYPE.json` JSON Schemas; empty: none. Its types join the catalogue.
    pub schemas: PathBuf,
    pub max_payload_bytes: usize,
    pub max_batch_bytes: usize,
}

impl DeliveryConfig {
    /// `ca_file`, when set.
    pub fn ca_file(&self) -> Option<&Path> {
        (!self.ca_file.as_os_str().is_empty()).then_some(self.ca_file.as_path())
    }

    /// `proxy`, when set.
    pub fn proxy(&self) -> Option<&str> {
        (!self.proxy.is_empty()).then_some(self.proxy.as_str())
    }
}

/// hookd's own events (API.md §12): endpoint and delivery transitions, ingested into `tenant`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorConfig {
    /// Empty: no operator events.
    pub tenant: String,
}

impl OperatorConfig {
    /// The tenant operator events go to, when they are on.
    pub fn tenant(&self) -> Option<&str> {
        (!self.tenant.is_empty()).then_some(self.tenant.as_str())
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `[source.nats]`: a JetStream stream read through a durable pull consumer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats: Option<NatsConfig>,
}

/// `[source.nats]` (API.md §15). Only `stream` is required.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// The server (or a comma-separated list of a cluster's servers).
    #[serde(default = "NatsConfig::default_url")]
    pub url: String,
    /// The stream events are published to; hookd does not create it.
    pub stream: String,
    /// The subjects of the stream this host takes (a filter, wildcards allowed); empty: all.
    #[serde(default)]
    pub subject: String,
    /// The durable consumer's name: one per host, kept by JetStream across restarts.
    #[serde(default = "NatsConfig::default_durable")]
    pub durable: String,
    /// How long JetStream waits for hookd's acknowledgement before redelivering a message.
    #[serde(default = "NatsConfig::default_ack_wait", with = "humantime_serde")]
    pub ack_wait: Duration,
}

impl NatsConfig {
    fn default_url() -> String {
        "nats://127.0.0.1:4222".to_string()
    }

    fn default_durable() -> String {
        "hookd".to_string()
    }

    fn default_ack_wait() -> Duration {
        Duration::from_secs(30)
    }

    /// The first rule `value` breaks as a JetStream stream or consumer name.
    fn check_name(value: &str) -> Result<(), String> {
        if value.is_empty() || value.len() > 255 {
            return Err("must be 1 to 255 characters".into());
        }
        match value
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || ".*>/\\".contains(*c))
        {
            Some(c) => Err(format!("{c:?} is not allowed in a JetStream name")),
            None => Ok(()),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid =
            |key: &'static str, message: String| Err(ConfigError::Invalid { key, message });
        if self.url.trim().is_empty() {
            return invalid("source.nats.url", "must not be empty".into());
        }
        if let Some(bad) =
            self.url.split(',').map(str::trim).find(|u| {
                !(u.starts_with("nats://") || u.starts_with("tls://") || !u.contains("://"))
            })
        {
            return invalid(
                "source.nats.url",
                format!("{bad:?}: the scheme must be nats:// or tls://"),
            );
        }
        if let Err(m) = Self::check_name(&self.stream) {
            return invalid("source.nats.stream", format!("{:?}: {m}", self.stream));
        }
        if let Err(m) = Self::check_name(&self.durable) {
            return invalid("source.nats.durable", format!("{:?}: {m}", self.durable));
        }
        if self
            .subject
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
            || self.subject.split('.').any(str::is_empty) && !self.subject.is_empty()
        {
            return invalid(
                "source.nats.subject",
                format!("{:?} is not a NATS subject", self.subject),
            );
        }
        if self.ack_wait < Duration::from_secs(1) {
            return invalid("source.nats.ack_wait", "must be at least 1s".into());
        }
        Ok(())
    }

    /// `url` with any user and password replaced by "***", for logs and `/readyz`.
    pub fn masked_url(&self) -> String {
        self.url
            .split(',')
            .map(|u| match (u.find("://"), u.rfind('@')) {
                (Some(scheme), Some(at)) if at > scheme => {
                    format!("{}***{}", &u[..scheme + 3], &u[at..])
                }
                _ => u.to_string(),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// A duration written as a humantime string ("30s", "5m") wherever it is read or shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HumanDuration(#[serde(with = "humantime_serde")] pub Duration);

impl Config {
    /// Loads defaults ← file ← environment. `file` is `--config`; without it `$HOOKD_CONFIG`, then
    /// `config/hookd.toml` when it exists.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let file: Option<PathBuf> = match file {
            Some(f) => Some(f.to_path_buf()),
            None => match std::env::var_os("HOOKD_CONFIG") {
                Some(f) => Some(PathBuf::from(f)),
                None => {
                    let local = PathBuf::from("config/hookd.toml");
                    local.exists().then_some(local)
                }
            },
        };
        if let Some(f) = &file {
            if !f.is_file() {
                return Err(ConfigError::Invalid {
                    key: "--config",
                    message: format!("{} is not a readable file", f.display()),
                });
            }
        }
        Self::from_figment(Self::figment(file.as_deref()))
    }

    pub fn figment(file: Option<&Path>) -> Figment {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(f) = file {
            figment = figment.merge(Toml::file(f));
        }
        figment.merge(
            // Only HOOKD_<SECTION>__<KEY>: HOOKD_CONFIG, HOOKD_URL and HOOKD_TOKEN (read by
            // `hookd ctl`) name no key.
            Env::prefixed("HOOKD_")
                .filter(|key| key.as_str().contains("__"))
                .split("__"),
        )
    }

    pub fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let config: Config = figment.extract()?;
        config.validate()?;
        Ok(config)
    }

    /// The defaults alone, as tests and benches start from them.
    pub fn defaults() -> Config {
        // invariant: DEFAULT_TOML is compiled in and covered by the `defaults_parse` test.
        Self::from_figment(Figment::from(Toml::string(DEFAULT_TOML))).expect("default config")
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.to_string(),
            })
        };
        if self.storage.prune_interval < Duration::from_secs(1) {
            return invalid("storage.prune_interval", "must be at least 1s");
        }
        let d = &self.delivery;
        if !(0.0..=1.0).contains(&d.retry_jitter) || d.retry_jitter.is_nan() {
            return invalid("delivery.retry_jitter", "must be between 0 and 1");
        }
        if d.max_concurrency == 0 || d.max_concurrency > 1024 {
            return invalid("delivery.max_concurrency", "must be between 1 and 1024");
        }
        if d.max_endpoints_per_tenant == 0 {
            return invalid("delivery.max_endpoints_per_tenant", "must be at least 1");
        }
        if d.timeout.is_zero() {
            return invalid("delivery.timeout", "must be greater than 0");
        }
        if d.retry_schedule.len() > 50 {
            return invalid("delivery.retry_schedule", "has more than 50 entries");
        }
        if d.retry_schedule.iter().any(|x| x.0 > MAX_RETRY_DELAY) {
            return invalid("delivery.retry_schedule", "a delay is longer than 30 days");
        }
        if reqwest::header::HeaderName::from_bytes(d.signature_header.as_bytes()).is_err() {
            return invalid(
                "delivery.signature_header",
                "is not a valid HTTP header name",
            );
        }
        for t in &self.events.types {
            if let Err(message) = crate::model::check_identifier(t) {
                return invalid("events.types", &format!("{t:?}: {message}"));
            }
        }
        if let Some(t) = self.operator.tenant() {
            if let Err(message) = crate::model::check_identifier(t) {
                return invalid("operator.tenant", &format!("{t:?}: {message}"));
            }
        }
        if let Some(p) = self.delivery.proxy() {
            if let Err(message) = crate::delivery::proxy::Proxy::parse(p) {
                return invalid("delivery.proxy", &format!("{p:?}: {message}"));
            }
        }
        if self.events.max_payload_bytes == 0 {
            return invalid("events.max_payload_bytes", "must be at least 1");
        }
        if self.events.max_batch_bytes < self.events.max_payload_bytes {
            return invalid(
                "events.max_batch_bytes",
                "must be at least events.max_payload_bytes",
            );
        }
        if self.storage.path.as_os_str().is_empty() {
            return invalid("storage.path", "must not be empty");
        }
        // A bare word that is not a level ("verbose") would be taken as a target name and
        // silence every line; only levels, or directives with `=`, are accepted.
        let levels = ["trace", "debug", "info", "warn", "error", "off"];
        if let Some(bad) = self
            .log
            .level
            .split(',')
            .map(str::trim)
            .find(|d| !d.contains('=') && !levels.contains(&d.to_ascii_lowercase().as_str()))
        {
            return invalid(
                "log.level",
                &format!(
                    "{bad:?} is neither a level (trace, debug, info, warn, error, off) nor a filter like hookd=debug"
                ),
            );
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return invalid("log.level", &e.to_string());
        }
        if let Some(nats) = &self.source.nats {
            nats.validate()?;
        }
        for (key, tokens) in [
            ("auth.admin_tokens", &self.auth.admin_tokens),
            ("auth.ingest_tokens", &self.auth.ingest_tokens),
        ] {
            if tokens.iter().any(|t| t.len() < 8) {
                return invalid(key, "every token must be at least 8 characters");
            }
        }
        Ok(())
    }

    /// The effective configuration as TOML with every token replaced by "***".
    pub fn to_masked_toml(&self) -> String {
        let mut masked = self.clone();
        for t in masked
            .auth
            .admin_tokens
            .iter_mut()
            .chain(masked.auth.ingest_tokens.iter_mut())
        {
            *t = "***".to_string();
        }
        if let Some(nats) = &mut masked.source.nats {
            nats.url = nats.masked_url();
        }
        // invariant: every field is TOML-representable (no maps with non-string keys, no None).
        toml_string(&masked)
    }

    pub fn retry_schedule(&self) -> Vec<Duration> {
        self.delivery.retry_schedule.iter().map(|d| d.0).collect()
    }
}

/// Longest single delay a retry schedule may hold.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(30 * 24 * 3600);

fn toml_string(config: &Config) -> String {
    serde_json::to_value(config)
        .map(|v| render_toml(&v))
        .unwrap_or_default()
}

/// Renders the two-level configuration object as TOML sections; figment carries no TOML writer.
fn render_toml(value: &serde_json::Value) -> String {
    let mut out = String::new();
    let root = value.as_object().cloned().unwrap_or_default();
    for (section, body) in root {
        out.push_str(&format!("[{section}]\n"));
        if let Some(map) = body.as_object() {
            for (k, v) in map {
                out.push_str(&format!("{k} = {v}\n"));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn defaults_parse() {
        let c = Config::defaults();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8470");
        assert_eq!(c.storage.path, PathBuf::from("./data"));
        assert!(c.storage.sync);
        assert_eq!(c.storage.retention, Duration::from_secs(7 * 86400));
        assert_eq!(c.storage.min_free_bytes, 256 << 20);
        assert_eq!(c.storage.prune_interval, Duration::from_secs(300));
        assert_eq!(
            c.retry_schedule(),
            [60, 300, 1800, 7200, 86400].map(Duration::from_secs)
        );
        assert_eq!(c.delivery.max_concurrency, 16);
        assert_eq!(c.events.max_payload_bytes, 262144);
        assert_eq!(c.log.format, LogFormat::Text);
    }

    #[test]
    fn env_overrides_file_overrides_defaults() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "h.toml",
                "[delivery]\ntimeout = \"5s\"\nmax_concurrency = 3\n",
            )?;
            jail.set_env("HOOKD_DELIVERY__MAX_CONCURRENCY", "7");
            jail.set_env("HOOKD_DELIVERY__RETRY_SCHEDULE", r#"["1s","250ms"]"#);
            jail.set_env("HOOKD_CONFIG", "ignored-by-the-env-layer.toml");
            jail.set_env("HOOKD_URL", "http://127.0.0.1:1");
            jail.set_env("HOOKD_TOKEN", "not-a-key");
            let c = Config::from_figment(Config::figment(Some(Path::new("h.toml")))).unwrap();
            assert_eq!(c.delivery.timeout, Duration::from_secs(5));
            assert_eq!(c.delivery.max_concurrency, 7);
            assert_eq!(
                c.retry_schedule(),
                vec![Duration::from_secs(1), Duration::from_millis(250)]
            );
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        Jail::expect_with(|jail| {
            jail.create_file("h.toml", "[delivery]\ntimeuot = \"5s\"\n")?;
            let e = Config::from_figment(Config::figment(Some(Path::new("h.toml"))))
                .unwrap_err()
                .to_string();
            assert!(e.contains("timeuot"), "{e}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("HOOKD_SERVR__LISTEN", "127.0.0.1:1");
            let e = Config::from_figment(Config::figment(None))
                .unwrap_err()
                .to_string();
            assert!(e.contains("servr"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_the_key() {
        Jail::expect_with(|jail| {
            jail.set_env("HOOKD_DELIVERY__TIMEOUT", "soon");
            let e = Config::from_figment(Config::figment(None))
                .unwrap_err()
                .to_string();
            assert!(e.to_lowercase().contains("delivery.timeout"), "{e}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("HOOKD_DELIVERY__RETRY_JITTER", "1.5");
            let e = Config::from_figment(Config::figment(None))
                .unwrap_err()
                .to_string();
            assert!(e.contains("delivery.retry_jitter"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn masked_toml_hides_tokens() {
        let mut c = Config::defaults();
        c.auth.admin_tokens = vec!["super-secret-token".into()];
        let text = c.to_masked_toml();
        assert!(!text.contains("super-secret-token"));
        assert!(text.contains("***"));
        assert!(text.contains("[delivery]"));
    }

    fn with_nats(toml: &str) -> Result<Config, ConfigError> {
        Config::from_figment(Figment::from(Toml::string(DEFAULT_TOML)).merge(Toml::string(toml)))
    }

    #[test]
    fn a_nats_source_needs_only_its_stream() {
        assert!(Config::defaults().source.nats.is_none());
        let c = with_nats("[source.nats]\nstream = \"EVENTS\"\n").unwrap();
        let n = c.source.nats.unwrap();
        assert_eq!(n.url, "nats://127.0.0.1:4222");
        assert_eq!((n.durable.as_str(), n.subject.as_str()), ("hookd", ""));
        assert_eq!(n.ack_wait, Duration::from_secs(30));
        let e = with_nats("[source.nats]\nurl = \"nats://x:4222\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("stream"), "{e}");
    }

    #[test]
    fn bad_nats_values_name_the_key() {
        for (toml, key) in [
            ("stream = \"EV.ENTS\"", "source.nats.stream"),
            ("stream = \"E\"\ndurable = \"a b\"", "source.nats.durable"),
            (
                "stream = \"E\"\nsubject = \"events..a\"",
                "source.nats.subject",
            ),
            (
                "stream = \"E\"\nack_wait = \"10ms\"",
                "source.nats.ack_wait",
            ),
            ("stream = \"E\"\nurl = \"http://h:4222\"", "source.nats.url"),
        ] {
            let e = with_nats(&format!("[source.nats]\n{toml}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{toml}: {e}");
        }
    }

    #[test]
    fn masked_toml_hides_nats_credentials() {
        let c = with_nats(
            "[source.nats]\nstream = \"E\"\nurl = \"nats://hookd:s3cret@a:4222,nats://b:4222\"\n",
        )
        .unwrap();
        let text = c.to_masked_toml();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("nats://***@a:4222,nats://b:4222"), "{text}");
    }
}
