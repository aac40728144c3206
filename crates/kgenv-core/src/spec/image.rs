//! The image spec (guide step 3): Kaggle's prebuilt docker-python image, optionally with a
//! thin layer of extra apt and pip packages (the guide's dlib/cmake).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::rules;
use crate::error::ValidationError;

/// Kaggle's GPU image.
pub const KAGGLE_GPU_IMAGE: &str = "gcr.io/kaggle-gpu-images/python:latest";
/// Kaggle's CPU image.
pub const KAGGLE_CPU_IMAGE: &str = "gcr.io/kaggle-images/python:latest";
/// Repository of Kaggle's GPU image (without tag).
pub const KAGGLE_GPU_REPO: &str = "gcr.io/kaggle-gpu-images/python";
/// Repository of Kaggle's CPU image (without tag).
pub const KAGGLE_CPU_REPO: &str = "gcr.io/kaggle-images/python";

/// A validated image spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Image {
    /// The base image reference (pulled unless present).
    pub base: String,
    /// Extra apt packages (built as a layer on the base).
    pub apt: Vec<String>,
    /// Extra pip requirements.
    pub pip: Vec<String>,
}

/// Builder for [`Image`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[must_use]
pub struct ImageBuilder {
    base: Option<String>,
    tag: Option<String>,
    apt: Option<Vec<String>>,
    pip: Option<Vec<String>>,
    #[serde(skip)]
    cpu: bool,
}

impl Image {
    /// A builder starting from Kaggle's GPU image.
    pub fn builder() -> ImageBuilder {
        ImageBuilder::default()
    }

    /// Whether an extras layer is built on the base.
    pub fn has_extras(&self) -> bool {
        !self.apt.is_empty() || !self.pip.is_empty()
    }

    /// The Dockerfile for the extras layer.
    pub fn dockerfile(&self) -> String {
        let mut d = format!("FROM {}\n", self.base);
        if !self.apt.is_empty() {
            d.push_str("RUN apt-get update \\\n && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends");
            for p in &self.apt {
                d.push(' ');
                d.push_str(&crate::shell::quote(p));
            }
            d.push_str(" \\\n && rm -rf /var/lib/apt/lists/*\n");
        }
        if !self.pip.is_empty() {
            d.push_str("RUN pip install --no-cache-dir");
            for p in &self.pip {
                d.push(' ');
                d.push_str(&crate::shell::quote(p));
            }
            d.push('\n');
        }
        d
    }

    /// The reference the container runs: the base, or `kgenv/extras:<hash of base+extras>`
    /// so unchanged extras never rebuild.
    pub fn run_reference(&self) -> String {
        if !self.has_extras() {
            return self.base.clone();
        }
        let hash = Sha256::digest(self.dockerfile().as_bytes());
        format!("kgenv/extras:{}", &hex::encode(hash)[..16])
    }
}

impl ImageBuilder {
    /// Base image reference.
    pub fn base(mut self, v: impl Into<String>) -> Self {
        self.base = Some(v.into());
        self
    }
    /// Tag of Kaggle's default image (`v150`; default `latest`), when `base` is not given.
    pub fn tag(mut self, v: impl Into<String>) -> Self {
        self.tag = Some(v.into());
        self
    }
    /// Defaults to Kaggle's CPU image instead of the GPU one (the container asks for no GPU).
    pub(crate) fn default_cpu(mut self, cpu: bool) -> Self {
        self.cpu = cpu;
        self
    }
    /// Adds an apt package.
    pub fn apt(mut self, v: impl Into<String>) -> Self {
        self.apt.get_or_insert_with(Vec::new).push(v.into());
        self
    }
    /// Adds a pip requirement.
    pub fn pip(mut self, v: impl Into<String>) -> Self {
        self.pip.get_or_insert_with(Vec::new).push(v.into());
        self
    }

    /// Validates and returns the spec.
    pub fn build(self) -> Result<Image, ValidationError> {
        let base = match (self.base, self.tag) {
            (Some(base), None) => base,
            (Some(_), Some(_)) => {
                return Err(ValidationError::new("tag", "`tag` picks the tag of Kaggle's image; with `base` set, write the tag in `base` (`repo:tag`)"));
            }
            (None, tag) => {
                let tag = tag.unwrap_or_else(|| "latest".into());
                let ok = tag.len() <= 128
                    && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                    && tag
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
                if !ok {
                    return Err(ValidationError::new(
                        "tag",
                        format!("`{tag}` is not an image tag like `latest` or `v150`"),
                    ));
                }
                format!(
                    "{}:{tag}",
                    if self.cpu {
                        KAGGLE_CPU_REPO
                    } else {
                        KAGGLE_GPU_REPO
                    }
                )
            }
        };
        rules::image_ref("base", &base)?;
        let apt = self.apt.unwrap_or_default();
        for p in &apt {
            rules::apt_package("apt", p)?;
        }
        let pip = self.pip.unwrap_or_default();
        for p in &pip {
            rules::pip_requirement("pip", p)?;
        }
        Ok(Image { base, apt, pip })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extras_tag_is_stable_and_changes_with_extras() {
        let a = Image::builder()
            .apt("cmake")
            .pip("dlib")
            .build()
            .expect("valid");
        let b = Image::builder()
            .apt("cmake")
            .pip("dlib")
            .build()
            .expect("valid");
        let c = Image::builder().apt("cmake").build().expect("valid");
        assert_eq!(a.run_reference(), b.run_reference());
        assert_ne!(a.run_reference(), c.run_reference());
        assert_eq!(
            Image::builder().build().expect("valid").run_reference(),
            KAGGLE_GPU_IMAGE
        );
        assert!(a.dockerfile().contains("pip install --no-cache-dir dlib"));
    }

    #[test]
    fn kaggle_image_tag_and_cpu_default() {
        assert_eq!(
            Image::builder().tag("v150").build().expect("valid").base,
            "gcr.io/kaggle-gpu-images/python:v150"
        );
        assert_eq!(
            Image::builder()
                .default_cpu(true)
                .build()
                .expect("valid")
                .base,
            KAGGLE_CPU_IMAGE
        );
        assert_eq!(
            Image::builder()
                .base("x/y:1")
                .tag("v2")
                .build()
                .expect_err("both")
                .field,
            "tag"
        );
        assert_eq!(
            Image::builder()
                .tag("v 1")
                .build()
                .expect_err("bad tag")
                .field,
            "tag"
        );
    }

    #[test]
    fn bad_packages_are_named() {
        assert_eq!(
            Image::builder()
                .apt("cmake; rm -rf /")
                .build()
                .expect_err("")
                .field,
            "apt"
        );
        assert_eq!(
            Image::builder()
                .pip("--index-url=http://x")
                .build()
                .expect_err("")
                .field,
            "pip"
        );
        assert_eq!(
            Image::builder()
                .base("Not An Image")
                .build()
                .expect_err("")
                .field,
            "base"
        );
    }
}
