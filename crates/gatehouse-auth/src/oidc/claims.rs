//! Verified claims → [`Identity`]: subject, groups and the RFC 8693 `act` delegation chain.

use super::error::TokenError;
use gatehouse_audit::ActorRef;
use gatehouse_core::{AuthMethod, Identity};
use serde_json::{Map, Value};

/// Deepest `act` nesting accepted; real chains are short, and this bounds the work.
pub const MAX_ACT_DEPTH: usize = 8;

/// Which claims carry what.
pub(crate) struct ClaimNames<'a> {
    pub subject: &'a str,
    pub groups: &'a str,
}

/// Builds the identity of an already verified token from `issuer`.
pub(crate) fn identity(
    claims: &Map<String, Value>,
    issuer: &str,
    names: &ClaimNames<'_>,
) -> Result<Identity, TokenError> {
    Ok(Identity {
        subject: subject(claims, names.subject)?,
        issuer: Some(issuer.to_owned()),
        actors: actors(claims)?,
        groups: groups(claims, names.groups),
        method: AuthMethod::Oidc,
        expires_at: claims
            .get("exp")
            .and_then(Value::as_i64)
            .and_then(|exp| time::OffsetDateTime::from_unix_timestamp(exp).ok()),
        claims: claims.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    })
}

fn subject(claims: &Map<String, Value>, name: &str) -> Result<String, TokenError> {
    match claims.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        None | Some(Value::Null) => Err(TokenError::MissingClaim(name.to_owned())),
        Some(_) => Err(TokenError::MalformedClaim(name.to_owned())),
    }
}

/// An array of strings or a single string; anything else is ignored (with a warning) rather
/// than rejected, since groups only ever widen what a caller may do.
fn groups(claims: &Map<String, Value>, name: &str) -> Vec<String> {
    match claims.get(name) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => {
            let groups: Vec<String> = items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            if groups.len() != items.len() {
                tracing::warn!(claim = name, "ignoring non-string entries in groups claim");
            }
            groups
        }
        Some(_) => {
            tracing::warn!(
                claim = name,
                "ignoring groups claim that is not a string or array"
            );
            Vec::new()
        }
    }
}

/// The `act` chain, nearest actor first: `act` is who acts now, `act.act` who it acts for,
/// and so on (RFC 8693 §4.1).
fn actors(claims: &Map<String, Value>) -> Result<Vec<ActorRef>, TokenError> {
    let mut actors = Vec::new();
    let mut next = claims.get("act");
    while let Some(act) = next {
        if act.is_null() {
            break;
        }
        if actors.len() == MAX_ACT_DEPTH {
            return Err(TokenError::ChainTooDeep);
        }
        let act = act
            .as_object()
            .ok_or_else(|| TokenError::MalformedClaim("act".into()))?;
        let subject = match act.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(TokenError::MalformedClaim("act".into())),
        };
        let issuer = match act.get("iss") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(TokenError::MalformedClaim("act".into())),
        };
        actors.push(ActorRef { subject, issuer });
        next = act.get("act");
    }
    Ok(actors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NAMES: ClaimNames<'static> = ClaimNames {
        subject: "sub",
        groups: "groups",
    };

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn actor(subject: &str, issuer: Option<&str>) -> ActorRef {
        ActorRef {
            subject: subject.into(),
            issuer: issuer.map(Into::into),
        }
    }

    #[test]
    fn plain_subject() {
        let id = identity(&claims(json!({"sub": "alice"})), "https://idp", &NAMES).unwrap();
        assert_eq!(id.subject, "alice");
        assert_eq!(id.issuer.as_deref(), Some("https://idp"));
        assert_eq!(id.method, AuthMethod::Oidc);
        assert!(id.actors.is_empty() && id.groups.is_empty());
    }

    #[test]
    fn custom_claim_names() {
        let names = ClaimNames {
            subject: "email",
            groups: "https://example.com/roles",
        };
        let c = claims(json!({"sub": "x", "email": "a@b", "https://example.com/roles": ["r"]}));
        let id = identity(&c, "i", &names).unwrap();
        assert_eq!(
            (id.subject.as_str(), id.groups),
            ("a@b", vec!["r".to_string()])
        );
    }

    #[test]
    fn subject_errors() {
        for (c, want) in [
            (json!({}), TokenError::MissingClaim("sub".into())),
            (json!({"sub": null}), TokenError::MissingClaim("sub".into())),
            (json!({"sub": ""}), TokenError::MalformedClaim("sub".into())),
            (json!({"sub": 7}), TokenError::MalformedClaim("sub".into())),
        ] {
            assert_eq!(identity(&claims(c.clone()), "i", &NAMES), Err(want), "{c}");
        }
    }

    #[test]
    fn groups_shapes() {
        let cases = [
            (json!(["a", "b"]), vec!["a", "b"]),
            (json!("dba"), vec!["dba"]),
            (json!(null), vec![]),
            (json!(["a", 1, {"x": 1}, "b"]), vec!["a", "b"]),
            (json!({"a": true}), vec![]),
            (json!(42), vec![]),
        ];
        for (g, want) in cases {
            let id = identity(&claims(json!({"sub": "s", "groups": g})), "i", &NAMES).unwrap();
            assert_eq!(id.groups, want, "{g}");
        }
        let id = identity(&claims(json!({"sub": "s"})), "i", &NAMES).unwrap();
        assert!(id.groups.is_empty());
    }

    #[test]
    fn nested_act_is_nearest_first() {
        let c = claims(json!({
            "sub": "alice",
            "act": {"sub": "sub-agent", "act": {"sub": "agent-7", "iss": "https://agents",
                    "act": {"sub": "scheduler"}}}
        }));
        let id = identity(&c, "i", &NAMES).unwrap();
        assert_eq!(
            id.actors,
            vec![
                actor("sub-agent", None),
                actor("agent-7", Some("https://agents")),
                actor("scheduler", None)
            ]
        );
        assert_eq!(
            id.to_string(),
            "scheduler for agent-7 for sub-agent for alice"
        );
    }

    #[test]
    fn act_depth_limit() {
        let chain = |depth: usize| {
            let mut act = Value::Null;
            for i in (0..depth).rev() {
                act = if act.is_null() {
                    json!({"sub": format!("a{i}")})
                } else {
                    json!({"sub": format!("a{i}"), "act": act})
                };
            }
            claims(json!({"sub": "s", "act": act}))
        };
        let id = identity(&chain(MAX_ACT_DEPTH), "i", &NAMES).unwrap();
        assert_eq!(id.actors.len(), MAX_ACT_DEPTH);
        assert_eq!(id.actors[0].subject, "a0");
        assert_eq!(
            identity(&chain(MAX_ACT_DEPTH + 1), "i", &NAMES),
            Err(TokenError::ChainTooDeep)
        );
    }

    #[test]
    fn malformed_act() {
        for act in [
            json!("agent"),
            json!({}),
            json!({"sub": 1}),
            json!({"sub": "a", "iss": 2}),
            json!({"sub": "a", "act": []}),
        ] {
            assert_eq!(
                identity(&claims(json!({"sub": "s", "act": act})), "i", &NAMES),
                Err(TokenError::MalformedClaim("act".into())),
                "{act}"
            );
        }
    }
}
