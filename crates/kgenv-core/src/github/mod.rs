//! The real GitHub backend: the REST API's deploy keys (`/repos/{owner}/{repo}/keys`),
//! user keys (`/user/keys`) and `/meta`, with `GITHUB_TOKEN` and `GITHUB_API_URL` (GitHub
//! Enterprise) as GitHub's own tools read them.
//!
//! [`api`] builds the requests (no I/O) and decodes the answers, `model` holds GitHub's
//! JSON, [`errors`] maps GitHub's statuses to typed errors (401 → unauthenticated, 404 on
//! a repository → permission denied, since GitHub answers it to both no access and no such
//! repository, 422 "key is already in use" → already exists), and `client` sends on the
//! shared [`crate::http`] transport (token, retries, rate limits waited up to a minute).
//!
//! Without a token, key calls return
//! [`BackendError::Unavailable`](crate::BackendError::Unavailable) (never a request GitHub
//! would refuse): the github-key step then prints the public key and the settings page to
//! paste it into instead of failing. `/meta` needs no token.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kgenv_core::BackendError> {
//! use kgenv_core::backends::github::{GitHub, KeyScope};
//! let github = kgenv_core::github::GitHubClient::from_env()?;
//! for key in github.list_keys(&KeyScope::Repo("octo/kaggle".into())).await? {
//!     println!("{} {}", key.id, key.title);
//! }
//! # Ok(()) }
//! ```

pub mod api;
mod client;
pub mod errors;
mod model;

pub use client::{web_url_for, GitHubClient, GitHubConfig, DEFAULT_API_URL, RETRY};
