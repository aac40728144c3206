//! Commands that need no environment: `init` (a commented kgenv.toml) and `hash-password`.

use std::io::{BufRead, IsTerminal};
use std::path::Path;

use kgenv_core::config;
use kgenv_core::runner::hash_password;
use kgenv_core::{BackendError, Error};

use crate::out;

/// `kgenv init`.
pub fn init(path: &Path, force: bool) -> Result<(), Error> {
    if path.exists() && !force {
        return Err(Error::Usage(format!(
            "{} exists; pass --force to overwrite it",
            path.display()
        )));
    }
    std::fs::write(path, config::TEMPLATE)
        .map_err(|e| BackendError::io(format!("writing {}", path.display()), e))?;
    out!(
        "wrote {}: set `instance.project` and `zones`, then run `kgenv plan`",
        path.display()
    );
    Ok(())
}

/// `kgenv hash-password`: asks twice without echo on a terminal, or reads one line from
/// stdin, and prints jupyter_server's argon2 hash. The password never leaves this machine.
pub fn hash(json: bool) -> Result<(), Error> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Jupyter password: ")
            .map_err(|e| BackendError::io("reading the password from the terminal", e))?;
        let again = rpassword::prompt_password("again: ")
            .map_err(|e| BackendError::io("reading the password from the terminal", e))?;
        if first != again {
            return Err(Error::Usage(
                "the two passwords differ; nothing was hashed".into(),
            ));
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| BackendError::io("reading the password from stdin", e))?;
        line.trim_end_matches(['\n', '\r']).to_string()
    };
    if password.is_empty() {
        return Err(Error::Usage(
            "an empty password would let anyone in: Jupyter never runs without authentication"
                .into(),
        ));
    }
    let hashed = hash_password(&password)?;
    if json {
        out!(
            "{}",
            serde_json::json!({ "result": { "hashed_password": hashed } })
        );
    } else {
        out!("{hashed}");
    }
    Ok(())
}
