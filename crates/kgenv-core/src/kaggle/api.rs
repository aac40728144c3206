//! Typed bodies of the Kaggle competition API calls kgenv makes, as the official client
//! (`kagglesdk.competitions`) sends them: JSON `POST`s to
//! `<api>/competitions.CompetitionApiService/<Method>`. No I/O here.

use serde::{Deserialize, Serialize};

use crate::backends::kaggle::DataFile;

/// The service all competition data calls belong to.
pub const SERVICE: &str = "competitions.CompetitionApiService";

/// `ListDataFiles` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListDataFilesRequest {
    /// Competition slug.
    pub competition_name: String,
    /// Page size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_size: Option<u32>,
    /// Token of the page to fetch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_token: Option<String>,
}

/// One file in a `ListDataFiles` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiDataFile {
    /// Reference (the file's path).
    #[serde(default)]
    pub r#ref: String,
    /// Name (the file's path).
    #[serde(default)]
    pub name: Option<String>,
    /// Size in bytes.
    #[serde(default)]
    pub total_bytes: u64,
}

impl From<ApiDataFile> for DataFile {
    fn from(f: ApiDataFile) -> Self {
        let name = f.name.filter(|n| !n.is_empty()).unwrap_or(f.r#ref);
        DataFile {
            name,
            size: f.total_bytes,
        }
    }
}

/// `ListDataFiles` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListDataFilesResponse {
    /// Files of this page.
    #[serde(default)]
    pub files: Vec<ApiDataFile>,
    /// Token of the next page; empty or absent on the last.
    #[serde(default)]
    pub next_page_token: Option<String>,
}

/// `DownloadDataFile` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DownloadDataFileRequest {
    /// Competition slug.
    pub competition_name: String,
    /// File path as listed.
    pub file_name: String,
}

/// `DownloadDataFiles` request (the whole competition as one archive).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DownloadDataFilesRequest {
    /// Competition slug.
    pub competition_name: String,
}

/// A redirect given as a JSON body (`HttpRedirect`) rather than a 3xx.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HttpRedirect {
    /// Where the bytes are.
    pub url: String,
}

/// Error body: `{"code": 403, "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ApiError {
    /// HTTP-like code.
    #[serde(default)]
    pub code: u16,
    /// Message.
    #[serde(default)]
    pub message: String,
}
