//! Bearer-token authentication: JWT verification (HS256 with the configured secret, and
//! optionally RS256/EdDSA public keys chosen by `kid`), roles, the signing secret's file,
//! and token minting for `feedgraph token`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::{AuthConfig, Config};

/// Name of the generated secret file inside the data directory.
pub const SECRET_FILE: &str = "jwt-secret";

/// What a caller may do. Each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Submit feedback and read the org's data.
    User,
    /// Also claim, mark and export training batches.
    Trainer,
    /// Also review feedback and manage adapters.
    Admin,
}

impl Role {
    /// Parses a role name; unknown names are `None` (and ignored in tokens).
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "user" => Some(Role::User),
            "trainer" => Some(Role::Trainer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Trainer => "trainer",
            Role::Admin => "admin",
        }
    }
}

/// The claims feedgraph reads from a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user.
    pub sub: String,
    /// The tenant.
    pub org: String,
    /// Role names (`user`, `trainer`, `admin`).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Expiry, seconds since epoch (required).
    pub exp: u64,
    /// Not valid before, seconds since epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Audience: checked (and required) when `auth.audience` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// Issuer: checked (and required) when `auth.issuer` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

/// A token's `aud`: one name or a list of names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// A single audience.
    One(String),
    /// Several audiences; the configured one must be among them.
    Many(Vec<String>),
}

/// Who is calling, after the token checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`.
    pub user: String,
    /// The token's `org`.
    pub org: String,
    /// The highest role the token grants, if any.
    pub role: Option<Role>,
}

/// Why a token was refused, or the auth setup is unusable.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No or malformed `Authorization` header, or an invalid token (401).
    #[error("{0}")]
    Invalid(String),
    /// The secret or a key file could not be read or created.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The auth configuration is unusable.
    #[error("auth configuration: {0}")]
    Config(String),
}

struct PublicKey {
    alg: Algorithm,
    key: DecodingKey,
}

/// Verifies bearer tokens against the configured secret and keys.
pub struct Authenticator {
    hs256: Option<DecodingKey>,
    public: HashMap<String, PublicKey>,
    leeway: u64,
    audience: Option<String>,
    issuer: Option<String>,
    verified: Verified,
}

/// Tokens that verified, by their text, with who they name and when they expire: a client
/// sends the same token with every request, and checking its signature (and parsing its
/// JSON) each time cost about a twentieth of a durable link's server time. The keys and
/// the rules a token is checked against do not change while the server runs, so a token
/// that verified stays good until its `exp` (plus the leeway); only that is checked again.
/// Bounded: when full it is emptied, and refills with the tokens in use.
struct Verified {
    capacity: usize,
    map: parking_lot::RwLock<HashMap<Box<str>, (Principal, u64)>>,
}

impl Verified {
    /// Who `token` names, if it verified before and has not expired since.
    fn get(&self, token: &str, leeway: u64) -> Option<Principal> {
        if self.capacity == 0 {
            return None;
        }
        let map = self.map.read();
        let (principal, exp) = map.get(token)?;
        // As the full check: expired once `exp` is more than the leeway in the past.
        (exp.saturating_add(leeway) >= now_secs()).then(|| principal.clone())
    }

    /// Remembers a token that verified (unless it is unusually long: the cache's memory
    /// stays within `capacity` times [`MAX_CACHED_TOKEN`] bytes of keys).
    fn put(&self, token: &str, principal: &Principal, exp: u64) {
        if self.capacity == 0 || token.len() > MAX_CACHED_TOKEN {
            return;
        }
        let mut map = self.map.write();
        if map.len() >= self.capacity {
            map.clear();
        }
        map.insert(token.into(), (principal.clone(), exp));
    }
}

/// The longest token [`Verified`] remembers, in bytes (ours are about 200).
const MAX_CACHED_TOKEN: usize = 2048;

/// Seconds since the epoch.
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("hs256", &self.hs256.is_some())
            .field("kids", &self.public.keys().collect::<Vec<_>>())
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .finish()
    }
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> AuthError {
    move |source| AuthError::Io { context, source }
}

/// Where the HS256 secret file is for this configuration.
pub fn secret_path(config: &Config) -> PathBuf {
    config
        .auth
        .secret_file
        .clone()
        .unwrap_or_else(|| config.data_dir.join(SECRET_FILE))
}

/// The HS256 secret: inline, or read from its file, which is created with 32 random bytes
/// (hex, mode 0600) if it does not exist yet. Returns the secret and whether it was created.
pub fn load_or_create_secret(config: &Config) -> Result<(Vec<u8>, bool), AuthError> {
    if let Some(s) = &config.auth.secret {
        if s.len() < 32 {
            return Err(AuthError::Config(
                "auth.secret must be at least 32 bytes".into(),
            ));
        }
        return Ok((s.as_bytes().to_vec(), false));
    }
    let path = secret_path(config);
    match read_secret(&path) {
        Ok(s) => return Ok((s, false)),
        Err(AuthError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    }
    let secret: String = {
        use rand::Rng;
        let bytes: [u8; 32] = rand::rng().random();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(&path) {
        Ok(mut f) => {
            f.write_all(format!("{secret}\n").as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(io(format!("writing {}", path.display())))?;
            Ok((secret.into_bytes(), true))
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read_secret(&path).map(|s| (s, false))
        }
        Err(e) => Err(io(format!("creating {}", path.display()))(e)),
    }
}

fn read_secret(path: &Path) -> Result<Vec<u8>, AuthError> {
    let text = std::fs::read_to_string(path).map_err(io(format!("reading {}", path.display())))?;
    let secret = text.trim();
    if secret.len() < 32 {
        return Err(AuthError::Config(format!(
            "{} holds fewer than 32 bytes; use a longer secret",
            path.display()
        )));
    }
    Ok(secret.as_bytes().to_vec())
}

impl Authenticator {
    /// Builds the verifier from the configuration (creating the secret file if needed).
    pub fn from_config(config: &Config) -> Result<Self, AuthError> {
        let auth: &AuthConfig = &config.auth;
        let hs256 = if auth.hs256 {
            let (secret, _) = load_or_create_secret(config)?;
            Some(DecodingKey::from_secret(&secret))
        } else {
            None
        };
        let mut public = HashMap::new();
        for k in &auth.public_keys {
            let pem = std::fs::read(&k.pem_file)
                .map_err(io(format!("reading key file {}", k.pem_file.display())))?;
            let (alg, key) = match k.alg.as_str() {
                "RS256" => (Algorithm::RS256, DecodingKey::from_rsa_pem(&pem)),
                "EdDSA" => (Algorithm::EdDSA, DecodingKey::from_ed_pem(&pem)),
                other => {
                    return Err(AuthError::Config(format!(
                        "key '{}': algorithm {other} is not supported (RS256 or EdDSA)",
                        k.kid
                    )));
                }
            };
            let key = key.map_err(|e| {
                AuthError::Config(format!("key '{}' in {}: {e}", k.kid, k.pem_file.display()))
            })?;
            public.insert(k.kid.clone(), PublicKey { alg, key });
        }
        if hs256.is_none() && public.is_empty() {
            return Err(AuthError::Config(
                "no way to verify tokens: enable hs256 or configure public_keys".into(),
            ));
        }
        Ok(Authenticator {
            hs256,
            public,
            leeway: auth.leeway_secs,
            audience: nonblank(&auth.audience),
            issuer: nonblank(&auth.issuer),
            verified: Verified {
                capacity: auth.verified_cache,
                map: parking_lot::RwLock::default(),
            },
        })
    }

    /// Checks an `Authorization` header value and returns the caller.
    pub fn verify_header(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        let header =
            header.ok_or_else(|| AuthError::Invalid("missing Authorization header".into()))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                AuthError::Invalid("Authorization header must be 'Bearer <token>'".into())
            })?;
        self.verify(token)
    }

    /// Verifies a token: signature with a configured key for its algorithm, `exp` (and
    /// `nbf` if present) within the leeway, `aud` and `iss` when configured, and non-empty
    /// `sub` and `org`. Refusals say what to fix in our own words and never repeat the
    /// token's contents.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if let Some(known) = self.verified.get(token, self.leeway) {
            return Ok(known);
        }
        let (principal, exp) = self.verify_uncached(token)?;
        self.verified.put(token, &principal, exp);
        Ok(principal)
    }

    /// [`Authenticator::verify`] without the cache; returns the token's `exp` too.
    fn verify_uncached(&self, token: &str) -> Result<(Principal, u64), AuthError> {
        let invalid = |m: String| AuthError::Invalid(m);
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            invalid(
                match e.kind() {
                    K::Base64(_) => "malformed token: a part is not valid base64url",
                    K::Json(_) | K::Utf8(_) => {
                        "malformed token: the header is not JSON naming an accepted 'alg' \
                         (HS256, RS256 or EdDSA; unsigned tokens are never accepted)"
                    }
                    _ => {
                        "malformed token: expected three dot-separated base64url parts \
                         (header.claims.signature)"
                    }
                }
                .into(),
            )
        })?;
        let (key, alg) = match header.alg {
            Algorithm::HS256 => match &self.hs256 {
                Some(k) => (k, Algorithm::HS256),
                None => return Err(invalid("HS256 tokens are not accepted here".into())),
            },
            alg @ (Algorithm::RS256 | Algorithm::EdDSA) => {
                let kid = header.kid.as_deref().ok_or_else(|| {
                    invalid(format!(
                        "{alg:?} token without a 'kid': name one of the configured keys"
                    ))
                })?;
                match self.public.get(kid) {
                    Some(pk) if pk.alg == alg => (&pk.key, alg),
                    Some(_) => {
                        return Err(invalid(format!(
                            "the key the token's 'kid' names is not a {alg:?} key"
                        )));
                    }
                    None => {
                        return Err(invalid(
                            "unknown key id: the token's 'kid' names no configured key".into(),
                        ));
                    }
                }
            }
            other => {
                return Err(invalid(format!(
                    "algorithm {other:?} is not accepted (HS256, RS256 or EdDSA)"
                )));
            }
        };
        let mut validation = Validation::new(alg);
        validation.algorithms = vec![alg];
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        match &self.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            invalid(match e.kind() {
                K::ExpiredSignature => "token expired: get a new one".into(),
                K::ImmatureSignature => "token not valid yet: its 'nbf' is in the future".into(),
                K::InvalidSignature => {
                    "bad token signature: it was not signed with a key this server trusts".into()
                }
                K::MissingRequiredClaim(c) => format!("token lacks the '{c}' claim"),
                K::InvalidAudience => {
                    "the token's 'aud' does not name this service (see auth.audience)".into()
                }
                K::InvalidIssuer => {
                    "the token's 'iss' is not the accepted issuer (see auth.issuer)".into()
                }
                K::InvalidAlgorithm => "the token's algorithm does not match its key".into(),
                K::Base64(_) | K::Utf8(_) => {
                    "malformed token: a part is not valid base64url".into()
                }
                K::Json(_) => "token claims are invalid: 'sub' and 'org' must be strings, \
                               'exp' a number of seconds, 'roles' a list of strings"
                    .into(),
                _ => "the token could not be verified".into(),
            })
        })?;
        let c = data.claims;
        if c.sub.trim().is_empty() {
            return Err(invalid("token has an empty 'sub'".into()));
        }
        if c.org.trim().is_empty() {
            return Err(invalid("token has an empty 'org'".into()));
        }
        if crate::service::check_org(&c.org).is_err() || c.sub.chars().any(char::is_control) {
            return Err(invalid(
                "token 'org' or 'sub' is too long or has control characters".into(),
            ));
        }
        let role = c.roles.iter().filter_map(|r| Role::parse(r)).max();
        Ok((
            Principal {
                user: c.sub,
                org: c.org,
                role,
            },
            c.exp,
        ))
    }
}

/// Mints an HS256 token with the configured secret (for `feedgraph token`).
pub fn mint(
    config: &Config,
    org: &str,
    sub: &str,
    roles: &[Role],
    ttl_secs: u64,
) -> Result<String, AuthError> {
    let (secret, _) = load_or_create_secret(config)?;
    let now = crate::model::now_millis() / 1000;
    let claims = Claims {
        sub: sub.to_owned(),
        org: org.to_owned(),
        roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
        exp: now + ttl_secs,
        nbf: None,
        iat: Some(now),
        aud: nonblank(&config.auth.audience).map(Audience::One),
        iss: nonblank(&config.auth.issuer),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&secret),
    )
    .map_err(|e| AuthError::Config(format!("cannot sign token: {e}")))
}

/// A configured string, with blank meaning unset.
fn nonblank(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticator(dir: &Path, cache: usize) -> (Config, Authenticator) {
        let mut config = Config {
            data_dir: dir.to_owned(),
            ..Config::default()
        };
        config.auth.secret = Some("a test secret that is long enough to sign with".into());
        config.auth.verified_cache = cache;
        let auth = Authenticator::from_config(&config).unwrap();
        (config, auth)
    }

    fn principal(user: &str) -> Principal {
        Principal {
            user: user.into(),
            org: "acme".into(),
            role: Some(Role::User),
        }
    }

    #[test]
    fn a_verified_token_is_remembered_until_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let (config, auth) = authenticator(dir.path(), 16);
        let token = mint(&config, "acme", "alice", &[Role::User], 600).unwrap();
        let first = auth.verify(&token).unwrap();
        assert_eq!(first.user, "alice");
        assert_eq!(auth.verified.map.read().len(), 1);
        assert_eq!(auth.verify(&token).unwrap(), first);
        // A remembered entry answers without the signature check (this text is no token).
        auth.verified
            .put("not-a-token", &principal("remembered"), now_secs() + 600);
        assert_eq!(auth.verify("not-a-token").unwrap().user, "remembered");
        // Once past its `exp` and the leeway it is checked in full again, and refused.
        auth.verified.put(
            "not-a-token",
            &principal("remembered"),
            now_secs() - auth.leeway - 5,
        );
        assert!(auth.verify("not-a-token").is_err());
        // Within the leeway it still counts, as in the full check.
        auth.verified
            .put("not-a-token", &principal("remembered"), now_secs() - 1);
        assert!(auth.verify("not-a-token").is_ok());
        // Refused tokens are never remembered.
        let before = auth.verified.map.read().len();
        assert!(auth.verify("x.y.z").is_err());
        assert_eq!(auth.verified.map.read().len(), before);
    }

    #[test]
    fn the_cache_is_bounded_and_can_be_turned_off() {
        let dir = tempfile::tempdir().unwrap();
        let (config, auth) = authenticator(dir.path(), 3);
        for n in 0..10 {
            let token = mint(&config, "acme", &format!("user{n}"), &[], 600).unwrap();
            assert_eq!(auth.verify(&token).unwrap().user, format!("user{n}"));
            assert!(auth.verified.map.read().len() <= 3);
        }
        let long = "x".repeat(MAX_CACHED_TOKEN + 1);
        auth.verified
            .put(&long, &principal("long"), now_secs() + 600);
        assert!(!auth.verified.map.read().contains_key(long.as_str()));
        let (config, off) = authenticator(dir.path(), 0);
        let token = mint(&config, "acme", "bob", &[], 600).unwrap();
        assert_eq!(off.verify(&token).unwrap().user, "bob");
        assert!(off.verified.map.read().is_empty());
        off.verified
            .put("not-a-token", &principal("x"), now_secs() + 600);
        assert!(off.verify("not-a-token").is_err());
    }
}
