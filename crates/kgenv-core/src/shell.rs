//! The one helper through which every value reaches a remote shell.
//!
//! Nothing in kgenv builds a shell line by string concatenation of user values: commands
//! are assembled with [`Cmd`], which quotes each argument with [`quote`].
//!
//! ```
//! use kgenv_core::shell::{quote, Cmd};
//! assert_eq!(quote("it's"), r#"'it'\''s'"#);
//! assert_eq!(Cmd::new("mkdir").arg("-p").arg("/mnt/my data").to_string(), "mkdir -p '/mnt/my data'");
//! ```

use std::fmt;

/// Quotes `value` for a POSIX shell so it arrives as exactly one argument, byte for byte.
///
/// Plain words (letters, digits, `-_./:,@%+`) are left bare for readable plans; everything
/// else is wrapped in single quotes, with each `'` written as `'\''`. `=` is not plain: a
/// bare `NAME=value` as the first word of a command is an assignment, not the program.
pub fn quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:,@%+".contains(&b));
    if plain {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for ch in value.chars() {
        if ch == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(ch);
        }
    }
    out.push('\'');
    out
}

/// A command line whose program and arguments are each quoted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Cmd {
    words: Vec<String>,
}

impl Cmd {
    /// A command running `program`.
    pub fn new(program: &str) -> Self {
        Self {
            words: vec![quote(program)],
        }
    }

    /// Adds one argument, quoted.
    pub fn arg(mut self, arg: impl AsRef<str>) -> Self {
        self.words.push(quote(arg.as_ref()));
        self
    }

    /// Adds several arguments, each quoted.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.words
            .extend(args.into_iter().map(|a| quote(a.as_ref())));
        self
    }

    /// The shell line.
    pub fn line(&self) -> String {
        self.words.join(" ")
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.line())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_what_a_shell_would_interpret() {
        assert_eq!(quote(""), "''");
        assert_eq!(quote("plain-word_1.2"), "plain-word_1.2");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("$HOME"), "'$HOME'");
        assert_eq!(quote("`id`"), "'`id`'");
        assert_eq!(quote("x'y"), "'x'\\''y'");
        assert_eq!(quote("line\nbreak"), "'line\nbreak'");
        assert_eq!(quote("日本"), "'日本'");
        assert_eq!(quote("a=b"), "'a=b'");
        assert_eq!(quote("--flag=value"), "'--flag=value'");
    }

    #[test]
    fn a_word_with_equals_is_a_program_not_an_assignment() {
        // Bare, `KGENV_X=1` would be an assignment and the line would run nothing (exit 0);
        // quoted, the shell looks for a program of that name and fails with 127.
        let line = Cmd::new("KGENV_X=1").line();
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(&line)
            .output()
            .expect("sh runs")
            .status;
        assert_eq!(status.code(), Some(127), "line: {line}");
    }

    #[test]
    fn round_trips_through_a_real_shell() {
        let samples = [
            "",
            "simple",
            "with space",
            "it's",
            "\"double\"",
            "$(touch /tmp/kgenv-pwned)",
            "`id`",
            "a\nb\tc",
            "back\\slash",
            "KAGGLE用分析環境",
            "--flag=value",
            "a=b",
            "*",
            "~",
            "!",
            "''''",
        ];
        for s in samples {
            let line = Cmd::new("printf").arg("%s").arg(s).line();
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(&line)
                .output()
                .expect("sh runs");
            assert_eq!(String::from_utf8_lossy(&out.stdout), s, "line: {line}");
        }
    }
}
