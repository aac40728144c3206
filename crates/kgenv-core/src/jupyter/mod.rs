//! Jupyter as kgenv runs it (guide step 4), never without authentication — everything but
//! the step itself (`steps::jupyter`, which writes these files to the host):
//!
//! - `hash`: the password, hashed here in jupyter_server's argon2 format so the plaintext
//!   never leaves the user's machine ([`hash_password`], [`verify_password`]);
//! - `tls`: the self-signed certificate kgenv makes and keeps, and its SHA-256 fingerprint
//!   ([`self_signed_certificate`], [`certificate_sha256`]);
//! - `token`: the tokens kgenv keeps for token mode and for the host's idle agent;
//! - `config`: the file names, where they are inside the container, and the
//!   jupyter_server config ([`JupyterLayout`], [`render_config`]);
//! - `supervisor`: the container's command, which starts Jupyter and restarts it when it
//!   exits or its files change ([`supervisor_command`]);
//! - `access`: the URL, fingerprint and token `kgenv jupyter` shows ([`access`]).
//!
//! The rendering functions are public so the tests can start the real jupyter_server from
//! PyPI with exactly what kgenv writes. Nothing here knows about plans or steps.
//!
//! ```
//! use kgenv_core::jupyter::{render_config, JupyterLayout};
//! use kgenv_core::spec::Jupyter;
//! let spec = Jupyter::builder().token().build()?;
//! let config = render_config(&spec, "tok", None, &JupyterLayout::in_container(&spec));
//! assert_eq!(config["IdentityProvider"]["token"], "tok");
//! assert_eq!(config["ServerApp"]["ip"], "0.0.0.0");
//! # Ok::<(), kgenv_core::ValidationError>(())
//! ```

mod access;
mod config;
mod hash;
mod supervisor;
mod tls;
mod token;

pub use access::{access, JupyterAccess};
pub use config::{
    render_config, JupyterLayout, AGENT_TOKEN_FILE, CONFIG_FILE, JUPYTER_DIR_IN_CONTAINER,
};
pub use hash::{hash_password, verify_password};
pub use supervisor::supervisor_command;
pub use tls::{certificate_sha256, self_signed_certificate};

pub(crate) use tls::{certificate, existing_certificate};
pub(crate) use token::{agent_token, existing_token, user_token};
