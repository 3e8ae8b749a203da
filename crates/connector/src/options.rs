//! Typed provider options: each profile declares the options its targets may set
//! (`targets[i].options`) as a struct with `#[serde(deny_unknown_fields)]`, and the connector
//! parses every target's options into it when it reads the targets file, before it binds a port
//! or consumes a queue. A key the profile does not read (a typo) or a value of the wrong type
//! stops the connector naming `targets[i].options.<key>`; without this a typo was silently
//! ignored and a wrong type failed every event of the target as permanent.
//!
//! A profile keeps the parsed options in a [`TargetOptions`] and reads them per event with
//! [`TargetOptions::get`], which parses on first use where no start-up check ran (the test
//! harness), so an event never reads an untyped map. A `null` value means "not set": declare
//! every field as an `Option` (a text field with [`text`]) and give its default where it is
//! read, so `key: ~` is accepted for a known key and still refused for an unknown one.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use scimrelay_core::config::TargetConfig;

use crate::{ConvergeError, FailureClass};

/// The options of a profile that takes none: any key is refused.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoOptions {}

/// A target's options parsed into `T`; an error is `("options.<key>", why)`, `why` naming the
/// target and what was expected.
pub fn parse<T: DeserializeOwned>(target: &TargetConfig) -> Result<T, (String, String)> {
    let set: serde_yaml::Mapping = target
        .options
        .iter()
        .map(|(k, v)| (serde_yaml::Value::String(k.clone()), v.clone()))
        .collect();
    serde_path_to_error::deserialize(serde_yaml::Value::Mapping(set)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        refusal(target, &path, &inner)
    })
}

/// The key and the reason of a refused option, from serde's path and message.
fn refusal(target: &TargetConfig, path: &str, message: &str) -> (String, String) {
    let profile = target.provider.as_str();
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (key, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let expected = expected.trim_start_matches(',').trim();
        let takes = if expected.starts_with("there are no fields") || expected.is_empty() {
            format!("the {profile} profile takes no options")
        } else {
            format!(
                "the {profile} profile's options are {}",
                expected
                    .trim_start_matches("expected ")
                    .trim_start_matches("one of ")
                    .replace('`', "")
            )
        };
        return (
            format!("options.{key}"),
            format!("is not an option (target {}): {takes}", target.id),
        );
    }
    let key = path
        .split('.')
        .next()
        .filter(|k| !k.is_empty() && *k != "?");
    let message = message.split(" at line ").next().unwrap_or(message);
    // Serde names Rust types; an operator reads YAML.
    let message = ["u64", "u32", "u16", "usize"]
        .iter()
        .fold(message.to_owned(), |m, t| {
            m.replace(
                &format!("expected {t}"),
                "expected a whole number (0 or more)",
            )
        });
    (
        key.map_or_else(|| "options".to_owned(), |k| format!("options.{k}")),
        format!("{message} (target {})", target.id),
    )
}

/// A text option: a string (trimmed; blank is "not set") or a number taken as its text, as
/// YAML reads `shortcode: 1234` unquoted. Use with `#[serde(default, deserialize_with = …)]`.
pub fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Str(String),
        Number(serde_yaml::Number),
    }
    let text = match Option::<Text>::deserialize(d) {
        Ok(None) => return Ok(None),
        Ok(Some(Text::Str(s))) => s.trim().to_owned(),
        Ok(Some(Text::Number(n))) => n.to_string(),
        Err(_) => return Err(serde::de::Error::custom("expected a string")),
    };
    Ok((!text.is_empty()).then_some(text))
}

/// A whole-number option that must be at least 1 (a count, a rate, a length): `0` is refused
/// when the targets file is read, naming the key, like any other wrong value. Use with
/// `#[serde(default, deserialize_with = …)]` on an `Option<u64>`.
pub fn at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<u64>::deserialize(d)? {
        Some(0) => Err(serde::de::Error::custom(
            "expected a whole number of at least 1",
        )),
        n => Ok(n),
    }
}

/// Each target's parsed options, for a profile to read per event.
#[derive(Debug)]
pub struct TargetOptions<T> {
    parsed: RwLock<HashMap<String, Arc<T>>>,
}

impl<T> Default for TargetOptions<T> {
    fn default() -> Self {
        Self {
            parsed: RwLock::default(),
        }
    }
}

impl<T: DeserializeOwned> TargetOptions<T> {
    /// Parses and keeps `target`'s options: the start-up check of [`crate::Provider::check_options`].
    pub fn check(&self, target: &TargetConfig) -> Result<Arc<T>, (String, String)> {
        let options = Arc::new(parse::<T>(target)?);
        self.parsed
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(target.id.clone(), options.clone());
        Ok(options)
    }

    /// `target`'s options: as parsed at start, else parsed now (a refusal is a permanent
    /// failure naming the key).
    pub fn get(&self, target: &TargetConfig) -> Result<Arc<T>, ConvergeError> {
        if let Some(o) = self
            .parsed
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&target.id)
        {
            return Ok(o.clone());
        }
        self.check(target).map_err(|(key, why)| {
            ConvergeError::new(
                FailureClass::Permanent,
                format!("targets file: targets.{key} {why}"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scimrelay_core::config::TargetsFile;

    /// Options of the shape a profile declares (GitHub's).
    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Example {
        #[serde(default, deserialize_with = "text")]
        shortcode: Option<String>,
        #[serde(default, deserialize_with = "at_least_one")]
        max_login_len: Option<u64>,
    }

    fn target(options: &str) -> TargetConfig {
        let yaml = format!(
            "targets:\n  - id: gh\n    provider: github\n    \
             base_url: https://api.github.com/scim/v2/enterprises/acme\n    \
             auth: {{kind: none}}\n    options: {options}\n"
        );
        let file: TargetsFile = serde_yaml::from_str(&yaml).expect("a targets file");
        file.targets[0].clone()
    }

    #[test]
    fn typos_and_wrong_types_name_the_key() {
        // (options, the key named or None, a word of the reason)
        let cases: &[(&str, Option<&str>, &str)] = &[
            ("{}", None, ""),
            ("{shortcode: acme, max_login_len: 39}", None, ""),
            ("{shortcode: 1234}", None, ""),
            ("{shortcode: null, max_login_len: ~}", None, ""),
            (
                "{shortcod: ~}",
                Some("options.shortcod"),
                "is not an option",
            ),
            (
                "{shortcod: acme}",
                Some("options.shortcod"),
                "options are shortcode or max_login_len",
            ),
            (
                "{Shortcode: acme}",
                Some("options.Shortcode"),
                "is not an option",
            ),
            (
                "{max_login_len: forty}",
                Some("options.max_login_len"),
                "whole number",
            ),
            (
                "{max_login_len: -1}",
                Some("options.max_login_len"),
                "whole number",
            ),
            (
                "{max_login_len: 3.5}",
                Some("options.max_login_len"),
                "whole number",
            ),
            ("{shortcode: [a, b]}", Some("options.shortcode"), "a string"),
            ("{shortcode: {x: 1}}", Some("options.shortcode"), "a string"),
            ("{shortcode: true}", Some("options.shortcode"), "a string"),
        ];
        for &(options, key, word) in cases {
            let got = parse::<Example>(&target(options));
            match key {
                None => assert!(got.is_ok(), "{options}: {got:?}"),
                Some(key) => {
                    let (k, why) = got.expect_err(options);
                    assert_eq!(k, key, "{options}: {why}");
                    assert!(
                        why.contains(word) && why.contains("target gh"),
                        "{options}: {why}"
                    );
                }
            }
        }
        for (yaml, text) in [
            ("\" 1234 \"", Some("1234")),
            ("1234", Some("1234")),
            ("1.50", Some("1.5")),
            ("18446744073709551615", Some("18446744073709551615")),
            ("\"  \"", None),
            ("~", None),
        ] {
            let got = parse::<Example>(&target(&format!("{{shortcode: {yaml}}}"))).expect(yaml);
            assert_eq!(got.shortcode.as_deref(), text, "{yaml}");
        }
    }

    #[test]
    fn a_profile_without_options_refuses_any() {
        let (k, why) = parse::<NoOptions>(&target("{region: eu-west-1}")).expect_err("refused");
        assert_eq!(k, "options.region");
        assert!(why.contains("takes no options"), "{why}");
        assert!(parse::<NoOptions>(&target("{}")).is_ok());
    }

    #[test]
    fn parsed_options_are_kept_per_target() {
        let kept = TargetOptions::<Example>::default();
        let t = target("{max_login_len: 20}");
        assert_eq!(kept.check(&t).expect("ok").max_login_len, Some(20));
        assert_eq!(kept.get(&t).expect("kept").max_login_len, Some(20));
        let bad = target("{max_login_len: x}");
        let e = TargetOptions::<Example>::default()
            .get(&bad)
            .expect_err("refused");
        assert_eq!(e.class, FailureClass::Permanent);
        assert!(e.detail.contains("targets.options.max_login_len"), "{e:?}");
    }
}
