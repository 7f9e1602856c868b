//! One-time sign-in links: `feedgraph console-link` prints a URL whose code names an org,
//! a user and roles, expires soon, and is signed with a key derived from the HS256 secret
//! (so it is not an API token). The server accepts each code once per process: on use it
//! mints an ordinary API token for the session cookie, as a pasted token would be.
//!
//! A code is `hex(JSON claims) "." hex(HMAC-SHA256(link key, JSON claims))`, where the
//! link key is HMAC-SHA256(secret, "feedgraph-console-link-v1").

use std::collections::HashMap;

use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::config::Config;
use crate::http::auth::{self, Role};

/// Why a sign-in link cannot be made or used.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The code is not one this server signed, or is malformed.
    #[error("this sign-in link is not valid here: ask for a new one")]
    Invalid,
    /// The code's time is over.
    #[error("this sign-in link has expired: ask for a new one")]
    Expired,
    /// The code was used already (links work once per server process).
    #[error("this sign-in link was used already: ask for a new one")]
    Used,
    /// Links need the HS256 secret.
    #[error("sign-in links need the HS256 secret (auth.hs256)")]
    Off,
    /// The secret could not be read or the session token not signed.
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
}

/// What a link grants.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LinkClaims {
    /// The org.
    pub org: String,
    /// The user.
    pub sub: String,
    /// Role names (user, trainer, admin).
    pub roles: Vec<String>,
    /// When the link stops working (seconds since the epoch).
    pub exp: u64,
    /// Lifetime of the session it opens, in seconds.
    pub session_secs: u64,
    /// Random, so each link is used once.
    pub nonce: String,
}

fn link_key(secret: &[u8]) -> Result<[u8; 32], LinkError> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).map_err(|_| LinkError::Off)?;
    mac.update(b"feedgraph-console-link-v1");
    Ok(mac.finalize().into_bytes().into())
}

fn sign(key: &[u8; 32], payload: &[u8]) -> Result<Hmac<Sha256>, LinkError> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).map_err(|_| LinkError::Off)?;
    mac.update(payload);
    Ok(mac)
}

fn now_secs() -> u64 {
    crate::model::now_millis() / 1000
}

/// A new link code for `org`/`sub` with `roles`, usable for `ttl_secs`, opening a session
/// of `session_secs`.
pub fn make(
    config: &Config,
    org: &str,
    sub: &str,
    roles: &[Role],
    ttl_secs: u64,
    session_secs: u64,
) -> Result<String, LinkError> {
    if !config.auth.hs256 {
        return Err(LinkError::Off);
    }
    let (secret, _) = auth::load_or_create_secret(config)?;
    let key = link_key(&secret)?;
    let nonce: [u8; 16] = rand::random();
    let claims = LinkClaims {
        org: org.to_owned(),
        sub: sub.to_owned(),
        roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
        exp: now_secs().saturating_add(ttl_secs),
        session_secs,
        nonce: super::hex(&nonce),
    };
    let payload = serde_json::to_vec(&claims).map_err(|_| LinkError::Invalid)?;
    let tag = sign(&key, &payload)?.finalize().into_bytes();
    Ok(format!("{}.{}", super::hex(&payload), super::hex(&tag)))
}

/// The server's side of links: the key, the configuration to mint session tokens with,
/// and the codes used since start-up.
pub struct Links {
    key: [u8; 32],
    config: Config,
    used: Mutex<HashMap<String, u64>>,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links").finish_non_exhaustive()
    }
}

impl Links {
    /// Links for this configuration; `None` when they cannot work (no HS256 secret).
    pub fn new(config: &Config) -> Option<Links> {
        if !config.auth.hs256 {
            return None;
        }
        let (secret, _) = auth::load_or_create_secret(config).ok()?;
        Some(Links {
            key: link_key(&secret).ok()?,
            config: config.clone(),
            used: Mutex::new(HashMap::new()),
        })
    }

    /// The claims of a valid, unexpired code (used or not).
    pub fn open(&self, code: &str) -> Result<LinkClaims, LinkError> {
        let (payload, tag) = code.split_once('.').ok_or(LinkError::Invalid)?;
        let payload = super::unhex(payload).ok_or(LinkError::Invalid)?;
        let tag = super::unhex(tag).ok_or(LinkError::Invalid)?;
        sign(&self.key, &payload)?
            .verify_slice(&tag)
            .map_err(|_| LinkError::Invalid)?;
        let claims: LinkClaims =
            serde_json::from_slice(&payload).map_err(|_| LinkError::Invalid)?;
        if claims.exp <= now_secs() {
            return Err(LinkError::Expired);
        }
        Ok(claims)
    }

    /// Uses a code: marks it used and returns an API token for its session.
    pub fn redeem(&self, code: &str) -> Result<String, LinkError> {
        let claims = self.open(code)?;
        let roles: Vec<Role> = claims.roles.iter().filter_map(|r| Role::parse(r)).collect();
        {
            let now = now_secs();
            let mut used = self.used.lock();
            used.retain(|_, exp| *exp > now);
            if used.insert(claims.nonce.clone(), claims.exp).is_some() {
                return Err(LinkError::Used);
            }
        }
        Ok(auth::mint(
            &self.config,
            &claims.org,
            &claims.sub,
            &roles,
            claims.session_secs,
        )?)
    }
}
