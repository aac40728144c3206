//! The token kgenv hands a host's Docker engine for a private Google registry is limited to
//! read-only storage: gcloud's application-default login is refreshed with that scope in the
//! request (against a local stand-in for Google's token endpoint, named by the credentials
//! file's `token_uri` as Google's auth libraries read it), and a token whose scope cannot be
//! narrowed is refused with what to do. A binary of its own: it sets process environment.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use axum::{Form, Json, Router};
use kgenv_core::docker::auth::RegistryAuth;
use kgenv_core::google_auth::DEVSTORAGE_READ_ONLY;

type Seen = Arc<Mutex<Vec<Vec<(String, String)>>>>;

async fn token(
    State(seen): State<Seen>,
    Form(form): Form<Vec<(String, String)>>,
) -> Json<serde_json::Value> {
    let scope = form
        .iter()
        .find(|(k, _)| k == "scope")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    seen.lock().expect("lock").push(form);
    Json(serde_json::json!({
        "access_token": format!("narrow-token-for-{}", scope.rsplit('/').next().unwrap_or("")),
        "expires_in": 3599,
        "token_type": "Bearer",
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_tokens_are_limited_to_read_only_storage() {
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route("/token", post(token))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let gcloud = tempfile::tempdir().expect("tmp");
    std::fs::write(
        gcloud.path().join("application_default_credentials.json"),
        serde_json::json!({
            "type": "authorized_user",
            "client_id": "kgenv-test.apps.googleusercontent.com",
            "client_secret": "test-client-secret",
            "refresh_token": "test-refresh-token",
            "token_uri": format!("http://127.0.0.1:{port}/token"),
        })
        .to_string(),
    )
    .expect("adc file");
    std::env::remove_var("GOOGLE_OAUTH_ACCESS_TOKEN");
    std::env::remove_var("GOOGLE_APPLICATION_CREDENTIALS");
    std::env::set_var("CLOUDSDK_CONFIG", gcloud.path());

    let auth = RegistryAuth::from_env();
    let creds = auth
        .credentials_for("us-docker.pkg.dev/p/r/private:1")
        .await
        .expect("a token")
        .expect("credentials for a Google registry");
    assert_eq!(creds.username.as_deref(), Some("oauth2accesstoken"));
    assert_eq!(
        creds.password.as_deref(),
        Some("narrow-token-for-devstorage.read_only"),
        "the password is the narrowed token"
    );
    {
        let forms = seen.lock().expect("lock");
        assert_eq!(forms.len(), 1, "one refresh");
        let get = |k: &str| {
            forms[0]
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("grant_type"), Some("refresh_token"));
        assert_eq!(get("refresh_token"), Some("test-refresh-token"));
        assert_eq!(
            get("scope"),
            Some(DEVSTORAGE_READ_ONLY),
            "the refresh asks for read-only storage and nothing else"
        );
    }
    // The token is reused while it is good.
    auth.credentials_for("gcr.io/p/i:1")
        .await
        .expect("a token")
        .expect("credentials");
    assert_eq!(seen.lock().expect("lock").len(), 1, "no second refresh");

    // A static token's scope cannot be narrowed: refused, saying what to do.
    std::env::set_var("GOOGLE_OAUTH_ACCESS_TOKEN", "ya29.full-scope-user-token");
    let err = RegistryAuth::from_env()
        .credentials_for("gcr.io/p/i:1")
        .await
        .expect_err("a token that cannot be narrowed is not handed out");
    let text = err.to_string();
    assert!(
        text.contains("GOOGLE_OAUTH_ACCESS_TOKEN") && !text.contains("ya29"),
        "names the variable, never the token: {text}"
    );
    std::env::remove_var("GOOGLE_OAUTH_ACCESS_TOKEN");

    // A token_uri in plain http off this machine is refused before any request.
    std::fs::write(
        gcloud.path().join("application_default_credentials.json"),
        serde_json::json!({
            "type": "authorized_user",
            "client_id": "c",
            "client_secret": "s",
            "refresh_token": "r",
            "token_uri": "http://example.com/token",
        })
        .to_string(),
    )
    .expect("adc file");
    let err = RegistryAuth::from_env()
        .credentials_for("gcr.io/p/i:1")
        .await
        .expect_err("no refresh token over plain http");
    assert!(err.to_string().contains("not https"), "{err}");
    assert_eq!(seen.lock().expect("lock").len(), 1);
}
