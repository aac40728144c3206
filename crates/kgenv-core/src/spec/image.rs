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
    apt: Option<Vec<String>>,
    pip: Option<Vec<String>>,
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
        let base = self.base.unwrap_or_else(|| KAGGLE_GPU_IMAGE.into());
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
        let a = Image::builder().apt("cmake").pip("dlib").build().expect("valid");
        let b = Image::builder().apt("cmake").pip("dlib").build().expect("valid");
        let c = Image::builder().apt("cmake").build().expect("valid");
        assert_eq!(a.run_reference(), b.run_reference());
        assert_ne!(a.run_reference(), c.run_reference());
        assert_eq!(Image::builder().build().expect("valid").run_reference(), KAGGLE_GPU_IMAGE);
        assert!(a.dockerfile().contains("pip install --no-cache-dir dlib"));
    }

    #[test]
    fn bad_packages_are_named() {
        assert_eq!(Image::builder().apt("cmake; rm -rf /").build().expect_err("").field, "apt");
        assert_eq!(Image::builder().pip("--index-url=http://x").build().expect_err("").field, "pip");
        assert_eq!(Image::builder().base("Not An Image").build().expect_err("").field, "base");
    }
}
