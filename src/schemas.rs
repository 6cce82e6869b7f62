//! `[events] schemas = "DIR"` (API.md §12): every `TYPE.json` in DIR is a JSON Schema
//! (2020-12) for that event type's payload, compiled once at start and again on SIGHUP.
//!
//! Invariants: a catalogue that loads is complete (every file compiled) or refused whole, so a
//! SIGHUP with one broken schema keeps the catalogue in force; validation reports the first
//! failing location as a path from the payload (`payload.decision.score`). Schemas never
//! fetch anything: remote `$ref`s are not resolved (the crate is built without its network
//! features), so a schema is only what its file says.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

pub struct TypeSchema {
    pub schema: Value,
    validator: jsonschema::Validator,
}

/// The schemas of one load, by event type.
#[derive(Default)]
pub struct Schemas {
    by_type: BTreeMap<String, TypeSchema>,
}

impl Schemas {
    /// Loads and compiles every `*.json` in `dir`; the error names the file at fault.
    pub fn load(dir: &Path) -> Result<Schemas, String> {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| format!("events.schemas: {}: {e}", dir.display()))?;
        let mut by_type = BTreeMap::new();
        for entry in entries {
            let path = entry
                .map_err(|e| format!("events.schemas: {}: {e}", dir.display()))?
                .path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            crate::model::check_identifier(&name).map_err(|m| {
                format!(
                    "{}: the file name is the event type, which {m}",
                    path.display()
                )
            })?;
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let schema: Value = serde_json::from_str(&text)
                .map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
            let validator = jsonschema::draft202012::options()
                .should_validate_formats(true)
                .build(&schema)
                .map_err(|e| format!("{}: not a valid JSON Schema: {e}", path.display()))?;
            by_type.insert(name, TypeSchema { schema, validator });
        }
        Ok(Schemas { by_type })
    }

    pub fn types(&self) -> impl Iterator<Item = &str> {
        self.by_type.keys().map(String::as_str)
    }

    pub fn get(&self, event_type: &str) -> Option<&TypeSchema> {
        self.by_type.get(event_type)
    }

    pub fn is_empty(&self) -> bool {
        self.by_type.is_empty()
    }
}

impl TypeSchema {
    /// `Ok` when `payload` satisfies the schema; else where (a path under `payload`) and why.
    pub fn check(&self, payload: &Value) -> Result<(), (String, String)> {
        match self.validator.iter_errors(payload).next() {
            None => Ok(()),
            Some(e) => {
                let pointer = e.instance_path.as_str();
                let path: String = pointer
                    .split('/')
                    .skip(1)
                    .map(|s| s.replace("~1", "/").replace("~0", "~"))
                    .fold(String::from("payload"), |mut acc, s| {
                        acc.push('.');
                        acc.push_str(&s);
                        acc
                    });
                Err((path, e.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn repo_schemas() -> Schemas {
        Schemas::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")).expect("schemas load")
    }

    #[test]
    fn the_repositorys_schemas_cover_the_seeds_types() {
        let s = repo_schemas();
        let types: Vec<&str> = s.types().collect();
        for t in [
            "fraud_detected",
            "high_risk_visitor",
            "daily_summary",
            "visitor.blocked",
            "visitor.challenged",
            "ban.created",
            "ban.expired",
            "anomaly.detected",
            "rate_limit.exceeded",
            "sale.created",
            "refund.processed",
            "chargeback.received",
            "threshold.reached",
            "data.synced",
        ] {
            assert!(types.contains(&t), "no schema for {t}");
        }
    }

    #[test]
    fn a_violation_names_its_path_under_payload() {
        let s = repo_schemas();
        let fraud = s.get("fraud_detected").unwrap();
        let mut payload = json!({
            "event": "fraud_detected", "timestamp": "2024-01-05T14:30:00Z",
            "property": {"id": "prop_abc123", "name": "My Landing Page"},
            "visitor": {"id": "vis_xyz789", "ip": "192.168.1.100", "country": "US", "userAgent": "Mozilla/5.0..."},
            "decision": {"score": 85, "label": "FRAUD", "action": "BLOCK",
                "reasons": [{"rule": "datacenter_ip", "score": 25}]}
        });
        assert_eq!(fraud.check(&payload), Ok(()));
        payload["decision"]["score"] = json!("85");
        let (path, _) = fraud.check(&payload).unwrap_err();
        assert_eq!(path, "payload.decision.score");
    }

    #[test]
    fn a_broken_schema_is_refused_naming_its_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ok.json"), r#"{"type": "object"}"#).unwrap();
        std::fs::write(dir.path().join("bad.json"), r#"{"type": "objekt"}"#).unwrap();
        let e = Schemas::load(dir.path()).err().unwrap();
        assert!(e.contains("bad.json"), "{e}");
    }
}
