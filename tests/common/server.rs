//! A real feedgraph HTTP server on 127.0.0.1:0 with a temporary data directory, on the
//! backend under test (`FEEDGRAPH_TEST_BACKEND`, see the parent module).
#![allow(dead_code)]

use feedgraph::config::Config;
use feedgraph::http::auth::{Role, mint};
use feedgraph::http::{RunningServer, start};

/// A running test server and a client for it.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// HTTP client.
    pub client: reqwest::Client,
    /// The configuration it runs with.
    pub config: Config,
    server: Option<RunningServer>,
    /// Keeps the data directory alive.
    pub dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts a server with default settings.
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// Starts a server after `tweak` adjusts the configuration.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        Self::start_in(tempfile::tempdir().unwrap(), tweak).await
    }

    /// Starts a server on an existing data directory; on PostgreSQL, on the database that
    /// stands for it, so a restarted server finds what the previous one stored.
    pub async fn start_in(dir: tempfile::TempDir, tweak: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = super::config(dir.path());
        config.server.bind = "127.0.0.1:0".into();
        tweak(&mut config);
        let mut server = start(config.clone(), std::future::pending()).await.unwrap();
        server.ready().await.unwrap();
        TestServer {
            base: format!("http://{}", server.addr),
            client: reqwest::Client::new(),
            config,
            server: Some(server),
            dir,
        }
    }

    /// A token for `sub` in `org` with `role`, valid for an hour.
    pub fn token(&self, org: &str, sub: &str, role: Role) -> String {
        mint(&self.config, org, sub, &[role], 3600).unwrap()
    }

    /// `base + /api/v1/llm + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1/llm{path}", self.base)
    }

    /// Sends a request with a token; returns status and JSON body (null if none).
    async fn send(&self, req: reqwest::RequestBuilder, token: &str) -> (u16, serde_json::Value) {
        let r = req.bearer_auth(token).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// GET with a token; returns status and JSON body.
    pub async fn get(&self, token: &str, path: &str) -> (u16, serde_json::Value) {
        self.send(self.client.get(self.url(path)), token).await
    }

    /// POST JSON with a token; returns status and JSON body.
    pub async fn post(
        &self,
        token: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        self.send(self.client.post(self.url(path)).json(body), token)
            .await
    }

    /// PATCH JSON with a token; returns status and JSON body.
    pub async fn patch(
        &self,
        token: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        self.send(self.client.patch(self.url(path)).json(body), token)
            .await
    }

    /// GET `base + path` with no token (health and readiness probes); the raw response.
    pub async fn get_open(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    /// Stops the server gracefully.
    pub async fn stop(self) {
        self.stop_keep().await;
    }

    /// Stops the server gracefully and hands back its data directory.
    pub async fn stop_keep(mut self) -> tempfile::TempDir {
        if let Some(mut s) = self.server.take() {
            s.shutdown();
            s.wait().await.unwrap();
        }
        self.dir
    }
}

/// Asserts the `{error, details}` shape and returns `details`.
pub fn error_details(body: &serde_json::Value) -> String {
    let obj = body
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {body}"));
    assert!(obj["error"].is_string(), "no 'error' in {body}");
    assert!(obj["details"].is_string(), "no 'details' in {body}");
    assert_eq!(obj.len(), 2, "extra fields in {body}");
    obj["details"].as_str().unwrap().to_owned()
}
