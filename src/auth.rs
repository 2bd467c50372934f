//! Authentication, scopes and tenants.
//!
//! Off while no API key and no JWT secret is configured (a warning is logged at start): every
//! caller is then an anonymous principal with every scope, known by its IP address. When on, a
//! caller presents an API key (configured as its SHA-256, never in clear) or an HS256 JWT
//! (`sub`, `tenant`, `scopes`, `exp`, optional `tier`) via `Authorization: Bearer`, `?token=`, or
//! a stream's first `auth` frame.
//!
//! Scopes `read`, `write`, `admin`, `coordinate` gate routes and frame types (`admin` implies the
//! others). A principal bound to a tenant lives in its own namespace: collection `docs` of tenant
//! `acme` is stored as `acme.docs` (user names cannot hold a dot), so another tenant's collection
//! is simply `not_found`, and its existence never leaks.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, Validation};
use ruvector_actors::validate_collection_name;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Write,
    Admin,
    Coordinate,
}

impl Scope {
    fn bit(self) -> u8 {
        match self {
            Scope::Read => 1,
            Scope::Write => 2,
            Scope::Admin => 4,
            Scope::Coordinate => 8,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
            Scope::Coordinate => "coordinate",
        }
    }

    fn parse(s: &str) -> Option<Scope> {
        match s {
            "read" => Some(Scope::Read),
            "write" => Some(Scope::Write),
            "admin" => Some(Scope::Admin),
            "coordinate" => Some(Scope::Coordinate),
            _ => None,
        }
    }
}

/// Service tier: premium callers are rate limited on their own quotas and shed last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    #[default]
    Standard,
    Premium,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Standard => "standard",
            Tier::Premium => "premium",
        }
    }
}

/// An API key as configured: its SHA-256 in hex, never the key itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    pub name: String,
    pub sha256: String,
    pub scopes: Vec<Scope>,
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub tier: Tier,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub keys: Vec<ApiKey>,
    pub jwt_secret: String,
    pub metrics_admin: bool,
}

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Principal {
    /// `key:<name>`, `jwt:<sub>` or `ip:<address>` (anonymous): the rate limiting key.
    pub id: Arc<str>,
    pub tenant: Option<Arc<str>>,
    scopes: u8,
    pub tier: Tier,
}

impl Principal {
    /// Auth is off: every scope, no tenant.
    pub fn anonymous(peer: Option<IpAddr>) -> Principal {
        let id = match peer {
            Some(ip) => format!("ip:{ip}"),
            None => "ip:unknown".into(),
        };
        Principal {
            id: Arc::from(id),
            tenant: None,
            scopes: 0xff,
            tier: Tier::Standard,
        }
    }

    pub fn has(&self, s: Scope) -> bool {
        self.scopes & (s.bit() | Scope::Admin.bit()) != 0
    }

    pub fn require(&self, s: Scope) -> Result<(), ApiError> {
        if self.has(s) {
            Ok(())
        } else {
            Err(ApiError::PermissionDenied(format!(
                "this credential lacks the {:?} scope",
                s.as_str()
            )))
        }
    }

    /// The stored name of a collection the caller names.
    pub fn internal(&self, name: &str) -> Result<String, ApiError> {
        validate_collection_name(name)?;
        Ok(match &self.tenant {
            Some(t) => format!("{t}.{name}"),
            None => name.to_owned(),
        })
    }

    /// The caller's name of a stored collection, or `None` when it is not the caller's.
    pub fn external<'a>(&self, stored: &'a str) -> Option<&'a str> {
        match (&self.tenant, stored.split_once('.')) {
            (Some(t), Some((owner, name))) if owner == t.as_ref() => Some(name),
            (None, None) => Some(stored),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    tier: Option<Tier>,
}

pub struct Auth {
    keys: HashMap<String, ApiKey>,
    jwt: Option<(DecodingKey, Validation)>,
    pub metrics_admin: bool,
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn scopes_of(list: impl IntoIterator<Item = Scope>) -> u8 {
    list.into_iter().fold(0, |acc, s| acc | s.bit())
}

fn valid_tenant(t: &str) -> bool {
    validate_collection_name(t).is_ok()
}

impl Auth {
    pub fn new(cfg: &AuthSettings) -> Result<Auth, String> {
        let mut keys = HashMap::new();
        for k in &cfg.keys {
            let hash = k.sha256.to_ascii_lowercase();
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "auth.keys: {:?}: sha256 must be 64 hex digits",
                    k.name
                ));
            }
            if let Some(t) = &k.tenant {
                if !valid_tenant(t) {
                    return Err(format!("auth.keys: {:?}: bad tenant {t:?}", k.name));
                }
            }
            keys.insert(hash, k.clone());
        }
        let jwt = (!cfg.jwt_secret.is_empty()).then(|| {
            let mut v = Validation::new(Algorithm::HS256);
            v.set_required_spec_claims(&["exp", "sub"]);
            v.leeway = 0;
            (DecodingKey::from_secret(cfg.jwt_secret.as_bytes()), v)
        });
        Ok(Auth {
            keys,
            jwt,
            metrics_admin: cfg.metrics_admin,
        })
    }

    pub fn enabled(&self) -> bool {
        !self.keys.is_empty() || self.jwt.is_some()
    }

    /// The principal behind a credential (`None`: none was given).
    pub fn authenticate(
        &self,
        token: Option<&str>,
        peer: Option<IpAddr>,
    ) -> Result<Principal, ApiError> {
        if !self.enabled() {
            return Ok(Principal::anonymous(peer));
        }
        let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) else {
            return Err(ApiError::Unauthenticated(
                "credentials required: Authorization: Bearer <API key or JWT>, ?token=, or an auth frame"
                    .into(),
            ));
        };
        if token.matches('.').count() == 2 {
            if let Some((key, validation)) = &self.jwt {
                let data = jsonwebtoken::decode::<Claims>(token, key, validation).map_err(|e| {
                    // (`ErrorKind` is non-exhaustive: one kind is told apart, the rest say why.)
                    ApiError::Unauthenticated(if *e.kind() == ErrorKind::ExpiredSignature {
                        "token expired".into()
                    } else {
                        format!("invalid token: {e}")
                    })
                })?;
                let c = data.claims;
                if let Some(t) = &c.tenant {
                    if !valid_tenant(t) {
                        return Err(ApiError::Unauthenticated(
                            "invalid token: bad tenant".into(),
                        ));
                    }
                }
                return Ok(Principal {
                    id: Arc::from(format!("jwt:{}", c.sub)),
                    tenant: c.tenant.map(Arc::from),
                    scopes: scopes_of(c.scopes.iter().filter_map(|s| Scope::parse(s))),
                    tier: c.tier.unwrap_or_default(),
                });
            }
        }
        match self.keys.get(&sha256_hex(token)) {
            Some(k) => Ok(Principal {
                id: Arc::from(format!("key:{}", k.name)),
                tenant: k.tenant.as_deref().map(Arc::from),
                scopes: scopes_of(k.scopes.iter().copied()),
                tier: k.tier,
            }),
            None => Err(ApiError::Unauthenticated("unknown API key".into())),
        }
    }
}

/// The credential of an HTTP request: `Authorization: Bearer …`, else `?token=`.
pub fn token_of<'a>(authorization: Option<&'a str>, query: &'a str) -> Option<&'a str> {
    authorization
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .or_else(|| query.split('&').find_map(|kv| kv.strip_prefix("token=")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    fn auth() -> Auth {
        Auth::new(&AuthSettings {
            keys: vec![ApiKey {
                name: "reader".into(),
                sha256: sha256_hex("secret-1"),
                scopes: vec![Scope::Read],
                tenant: Some("acme".into()),
                tier: Tier::Premium,
            }],
            jwt_secret: "jwt-secret".into(),
            metrics_admin: false,
        })
        .unwrap()
    }

    fn jwt(claims: serde_json::Value, secret: &str) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn keys_and_jwts_become_principals() {
        let a = auth();
        let p = a.authenticate(Some("secret-1"), None).unwrap();
        assert!(p.has(Scope::Read) && !p.has(Scope::Write));
        assert_eq!(p.tier, Tier::Premium);
        assert_eq!(p.internal("docs").unwrap(), "acme.docs");
        assert_eq!(p.external("acme.docs"), Some("docs"));
        assert_eq!(p.external("other.docs"), None);
        assert_eq!(p.external("docs"), None);
        assert!(p.internal("a.b").is_err());
        assert_eq!(
            a.authenticate(Some("nope"), None).unwrap_err().code(),
            "unauthenticated"
        );
        assert_eq!(
            a.authenticate(None, None).unwrap_err().code(),
            "unauthenticated"
        );

        let exp = proto_now() + 600;
        let t = jwt(
            json!({"sub": "bot", "scopes": ["write"], "exp": exp}),
            "jwt-secret",
        );
        let p = a.authenticate(Some(&t), None).unwrap();
        assert!(p.has(Scope::Write) && !p.has(Scope::Read));
        assert_eq!(p.external("docs"), Some("docs"));
        let expired = jwt(
            json!({"sub": "bot", "scopes": ["read"], "exp": proto_now() - 10}),
            "jwt-secret",
        );
        let e = a.authenticate(Some(&expired), None).unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");
        let forged = jwt(
            json!({"sub": "bot", "scopes": ["admin"], "exp": exp}),
            "other",
        );
        assert_eq!(
            a.authenticate(Some(&forged), None).unwrap_err().code(),
            "unauthenticated"
        );
        let admin = jwt(
            json!({"sub": "root", "scopes": ["admin"], "exp": exp}),
            "jwt-secret",
        );
        let p = a.authenticate(Some(&admin), None).unwrap();
        assert!(p.has(Scope::Coordinate) && p.has(Scope::Write));
    }

    fn proto_now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    #[test]
    fn off_without_keys() {
        let a = Auth::new(&AuthSettings {
            keys: vec![],
            jwt_secret: String::new(),
            metrics_admin: false,
        })
        .unwrap();
        assert!(!a.enabled());
        let p = a.authenticate(None, Some([10, 0, 0, 1].into())).unwrap();
        assert!(p.has(Scope::Admin));
        assert_eq!(&*p.id, "ip:10.0.0.1");
        assert_eq!(token_of(Some("Bearer abc"), "x=1"), Some("abc"));
        assert_eq!(token_of(None, "x=1&token=t2"), Some("t2"));
    }
}
