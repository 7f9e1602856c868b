//! The auth table: every way a token can be wrong, and the status and body it gets.

mod common;

use std::path::PathBuf;

use common::server::{TestServer, error_details};
use feedgraph::config::PublicKeyConfig;
use feedgraph::http::auth::Claims;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};

fn keys() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/keys")
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims() -> serde_json::Value {
    serde_json::json!({"sub": "alice", "org": "acme", "roles": ["user"], "exp": now() + 600})
}

fn b64(bytes: &[u8]) -> String {
    // base64url without padding, written out to avoid a test-only dependency.
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn hs(secret: &[u8], claims: &serde_json::Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

#[tokio::test]
async fn auth_table() {
    let s = TestServer::start_with(|c| {
        c.auth.public_keys = vec![
            PublicKeyConfig {
                kid: "rsa-1".into(),
                alg: "RS256".into(),
                pem_file: keys().join("rsa_public.pem"),
            },
            PublicKeyConfig {
                kid: "ed-1".into(),
                alg: "EdDSA".into(),
                pem_file: keys().join("ed_public.pem"),
            },
        ];
    })
    .await;
    let secret = std::fs::read_to_string(s.dir.path().join("jwt-secret")).unwrap();
    let secret = secret.trim().as_bytes().to_vec();
    let rsa_private = std::fs::read(keys().join("rsa_private.pem")).unwrap();
    let rsa_public = std::fs::read(keys().join("rsa_public.pem")).unwrap();
    let ed_private = std::fs::read(keys().join("ed_private.pem")).unwrap();

    let rs = |kid: Option<&str>, claims: &serde_json::Value| {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = kid.map(Into::into);
        encode(
            &h,
            claims,
            &EncodingKey::from_rsa_pem(&rsa_private).unwrap(),
        )
        .unwrap()
    };
    let ed = |kid: &str| {
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some(kid.into());
        encode(
            &h,
            &claims(),
            &EncodingKey::from_ed_pem(&ed_private).unwrap(),
        )
        .unwrap()
    };
    let with = |k: &str, v: serde_json::Value| {
        let mut c = claims();
        c[k] = v;
        c
    };
    let without = |k: &str| {
        let mut c = claims();
        c.as_object_mut().unwrap().remove(k);
        c
    };
    let none_alg = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims().to_string().as_bytes())
    );

    // (case, Authorization header or None, expected status, text expected in details)
    let cases: Vec<(&str, Option<String>, u16, &str)> = vec![
        (
            "valid HS256",
            Some(format!("Bearer {}", hs(&secret, &claims()))),
            200,
            "",
        ),
        (
            "valid RS256 with kid",
            Some(format!("Bearer {}", rs(Some("rsa-1"), &claims()))),
            200,
            "",
        ),
        (
            "valid EdDSA with kid",
            Some(format!("Bearer {}", ed("ed-1"))),
            200,
            "",
        ),
        ("missing header", None, 401, "missing Authorization"),
        (
            "not bearer",
            Some("Basic YWxpY2U6c2VjcmV0".into()),
            401,
            "Bearer <token>",
        ),
        (
            "empty bearer",
            Some("Bearer ".into()),
            401,
            "Bearer <token>",
        ),
        (
            "garbage token",
            Some("Bearer not.a.jwt".into()),
            401,
            "malformed",
        ),
        (
            "wrong secret",
            Some(format!(
                "Bearer {}",
                hs(b"another-secret-that-is-long-enough!!", &claims())
            )),
            401,
            "signature",
        ),
        (
            "none alg",
            Some(format!("Bearer {none_alg}")),
            401,
            "malformed",
        ),
        // HS/RS confusion: HS256 signed with the RSA public key as the HMAC secret.
        (
            "HS256 keyed with the RSA public key",
            Some(format!("Bearer {}", hs(&rsa_public, &claims()))),
            401,
            "signature",
        ),
        (
            "RS256 without kid",
            Some(format!("Bearer {}", rs(None, &claims()))),
            401,
            "kid",
        ),
        (
            "RS256 with unknown kid",
            Some(format!("Bearer {}", rs(Some("nope"), &claims()))),
            401,
            "unknown key id",
        ),
        (
            "EdDSA token naming the RSA key",
            Some(format!("Bearer {}", ed("rsa-1"))),
            401,
            "is not a EdDSA key",
        ),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                hs(&secret, &with("exp", (now() - 3600).into()))
            )),
            401,
            "expired",
        ),
        (
            "not yet valid",
            Some(format!(
                "Bearer {}",
                hs(&secret, &with("nbf", (now() + 3600).into()))
            )),
            401,
            "not valid yet",
        ),
        (
            "missing exp",
            Some(format!("Bearer {}", hs(&secret, &without("exp")))),
            401,
            "exp",
        ),
        (
            "missing sub",
            Some(format!("Bearer {}", hs(&secret, &without("sub")))),
            401,
            "sub",
        ),
        (
            "missing org",
            Some(format!("Bearer {}", hs(&secret, &without("org")))),
            401,
            "org",
        ),
        (
            "empty org",
            Some(format!("Bearer {}", hs(&secret, &with("org", "".into())))),
            401,
            "org",
        ),
        (
            "no role",
            Some(format!(
                "Bearer {}",
                hs(&secret, &with("roles", serde_json::json!([])))
            )),
            403,
            "role",
        ),
        (
            "unknown role only",
            Some(format!(
                "Bearer {}",
                hs(&secret, &with("roles", serde_json::json!(["guest"])))
            )),
            403,
            "role",
        ),
    ];
    for (name, header, status, text) in cases {
        let mut req = s.client.get(s.url("/feedback/stats"));
        if let Some(h) = &header {
            req = req.header("Authorization", h);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{name}");
        let body: serde_json::Value = r.json().await.unwrap();
        if status == 200 {
            assert_eq!(body["total_feedback"], 0, "{name}");
            continue;
        }
        let details = error_details(&body);
        assert!(details.contains(text), "{name}: {details}");
        // Our own words: no library error names, no list of algorithms, nothing from the
        // token (the unknown kid is 'nope').
        for leak in ["InvalidToken", "Error(", "HS384", "nope", "variant"] {
            assert!(!details.contains(leak), "{name}: '{leak}' in {details}");
        }
        match status {
            401 => {
                assert_eq!(body["error"], "Unauthorized", "{name}");
                assert!(
                    details.starts_with("Valid Bearer Token required"),
                    "{name}: {details}"
                );
            }
            403 => assert_eq!(body["error"], "Forbidden", "{name}"),
            _ => unreachable!(),
        }
    }
    // The decoded claims type rejects tokens without org at the type level too.
    assert!(serde_json::from_value::<Claims>(without("org")).is_err());
    s.stop().await;
}

#[tokio::test]
async fn hs256_can_be_turned_off() {
    let s = TestServer::start_with(|c| {
        c.auth.hs256 = false;
        c.auth.public_keys = vec![PublicKeyConfig {
            kid: "rsa-1".into(),
            alg: "RS256".into(),
            pem_file: keys().join("rsa_public.pem"),
        }];
        c.auth.secret = Some("x".repeat(40));
    })
    .await;
    let token = hs(&"x".repeat(40).into_bytes(), &claims());
    let r = s
        .client
        .get(s.url("/feedback/stats"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(error_details(&body).contains("HS256"));
    s.stop().await;
}

#[tokio::test]
async fn audience_and_issuer_are_required_when_configured() {
    let s = TestServer::start_with(|c| {
        c.auth.audience = Some("feedgraph".into());
        c.auth.issuer = Some("https://idp.example".into());
    })
    .await;
    let secret = std::fs::read_to_string(s.dir.path().join("jwt-secret")).unwrap();
    let secret = secret.trim().as_bytes().to_vec();
    let with = |pairs: &[(&str, serde_json::Value)]| {
        let mut c = claims();
        for (k, v) in pairs {
            c[*k] = v.clone();
        }
        hs(&secret, &c)
    };
    let aud = ("aud", serde_json::json!("feedgraph"));
    let iss = ("iss", serde_json::json!("https://idp.example"));
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "minted by feedgraph token",
            s.token("acme", "alice", feedgraph::http::auth::Role::User),
            200,
            "",
        ),
        ("both right", with(&[aud.clone(), iss.clone()]), 200, ""),
        (
            "audience in a list",
            with(&[
                ("aud", serde_json::json!(["other", "feedgraph"])),
                iss.clone(),
            ]),
            200,
            "",
        ),
        ("no aud", with(std::slice::from_ref(&iss)), 401, "'aud'"),
        (
            "wrong aud",
            with(&[("aud", serde_json::json!("billing")), iss.clone()]),
            401,
            "auth.audience",
        ),
        ("no iss", with(std::slice::from_ref(&aud)), 401, "'iss'"),
        (
            "wrong iss",
            with(&[
                aud.clone(),
                ("iss", serde_json::json!("https://evil.example")),
            ]),
            401,
            "auth.issuer",
        ),
    ];
    for (name, token, status, text) in cases {
        let r = s
            .client
            .get(s.url("/feedback/stats"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{name}");
        if status != 200 {
            let body: serde_json::Value = r.json().await.unwrap();
            let details = error_details(&body);
            assert!(details.contains(text), "{name}: {details}");
            assert!(
                !details.contains("evil") && !details.contains("billing"),
                "{details}"
            );
        }
    }
    s.stop().await;

    // Not configured: tokens need neither, and one carrying them is still accepted.
    let s = TestServer::start().await;
    let secret = std::fs::read_to_string(s.dir.path().join("jwt-secret")).unwrap();
    let mut c = claims();
    c["aud"] = "anyone".into();
    c["iss"] = "someone".into();
    let token = hs(secret.trim().as_bytes(), &c);
    let r = s
        .client
        .get(s.url("/feedback/stats"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    s.stop().await;
}
