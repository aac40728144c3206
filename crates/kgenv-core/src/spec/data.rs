//! The data spec (guide step 5): a competition's files, selected by glob, landed in a
//! directory or straight in a bucket.

use serde::{Deserialize, Serialize};

use super::rules;
use crate::backends::kaggle::FileSelection;
use crate::error::ValidationError;

/// A validated data spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Data {
    /// Competition slug, e.g. `titanic`.
    pub competition: String,
    /// File globs (`*` for all).
    pub files: Vec<String>,
    /// Destination: an absolute directory on the host, or `gs://bucket/prefix`.
    pub dest: String,
    /// Unpack the `.zip` files Kaggle serves.
    pub extract: bool,
}

/// Builder for [`Data`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[must_use]
pub struct DataBuilder {
    competition: Option<String>,
    files: Option<Vec<String>>,
    dest: Option<String>,
    extract: Option<bool>,
}

impl Data {
    /// A builder for `competition`, every file; inside an [`super::Env`] the destination
    /// defaults to `<host data dir>/input/<competition>`, which the container sees as
    /// `/kaggle/input/<competition>`.
    pub fn builder(competition: impl Into<String>) -> DataBuilder {
        DataBuilder {
            competition: Some(competition.into()),
            ..Default::default()
        }
    }

    /// Whether `name` is selected by the globs, by the rule every data path shares
    /// ([`FileSelection`]; a spec whose globs do not parse selects nothing).
    pub fn selects(&self, name: &str) -> bool {
        FileSelection::new(&self.files).is_ok_and(|s| s.matches(name))
    }
}

impl DataBuilder {
    /// Adds a file glob.
    pub fn files(mut self, glob: impl Into<String>) -> Self {
        self.files.get_or_insert_with(Vec::new).push(glob.into());
        self
    }
    /// Destination directory or `gs://bucket/prefix`.
    pub fn dest(mut self, v: impl Into<String>) -> Self {
        self.dest = Some(v.into());
        self
    }
    pub(crate) fn default_dest_dir(mut self, dir: &str) -> Self {
        if self.dest.is_none() {
            let comp = self.competition.clone().unwrap_or_default();
            self.dest = Some(format!("{dir}/{comp}"));
        }
        self
    }
    /// Unpack zips.
    pub fn extract(mut self, v: bool) -> Self {
        self.extract = Some(v);
        self
    }

    /// Validates and returns the spec.
    pub fn build(self) -> Result<Data, ValidationError> {
        let competition = self
            .competition
            .ok_or_else(|| ValidationError::new("competition", "is required"))?;
        let ok = competition.starts_with(|c: char| c.is_ascii_alphanumeric())
            && competition
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            return Err(ValidationError::new("competition", format!("`{competition}` is not a competition slug like `titanic` (the part after /competitions/ in its URL)")));
        }
        let files = self.files.unwrap_or_else(|| vec!["*".into()]);
        for g in &files {
            if let Err(e) = globset::Glob::new(g) {
                return Err(ValidationError::new(
                    "files",
                    format!("`{g}` is not a valid glob: {e}"),
                ));
            }
        }
        let dest = self.dest.ok_or_else(|| {
            ValidationError::new(
                "dest",
                "is required: a directory such as `/data/titanic` or `gs://bucket/prefix`",
            )
        })?;
        if let Some(rest) = dest.strip_prefix("gs://") {
            let bucket = rest.split('/').next().unwrap_or_default();
            rules::bucket_name("dest", bucket)?;
        } else {
            rules::abs_path("dest", &dest)?;
        }
        Ok(Data {
            competition,
            files,
            dest,
            extract: self.extract.unwrap_or(false),
        })
    }
}
