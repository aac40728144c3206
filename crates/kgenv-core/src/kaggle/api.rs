//! Typed bodies of the Kaggle competition API calls kgenv makes, as the official client
//! (`kagglesdk.competitions`) sends them: JSON `POST`s to
//! `<api>/competitions.CompetitionApiService/<Method>`, and the request builder that makes
//! them. No I/O here.

use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::env::KaggleEndpoint;
use crate::backends::kaggle::DataFile;
use crate::backends::BackendResult;
use crate::http::Request;

/// The service all competition data calls belong to.
pub const SERVICE: &str = "competitions.CompetitionApiService";

/// The JSON `POST` of `method` of the competition service with `body` (credentials are
/// the transport's to add).
pub fn request(
    endpoint: &KaggleEndpoint,
    method: &str,
    body: &impl Serialize,
) -> BackendResult<Request> {
    Request::new(
        Method::POST,
        endpoint.method_url(SERVICE, method)?,
        format!("Kaggle {method}"),
    )
    .json(body)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_json_posts_to_the_competition_service() {
        let r = request(
            &KaggleEndpoint::prod(),
            "ListDataFiles",
            &ListDataFilesRequest {
                competition_name: "titanic".into(),
                page_size: Some(200),
                page_token: None,
            },
        )
        .expect("request");
        assert_eq!(r.method, Method::POST);
        assert_eq!(
            r.url.as_str(),
            "https://api.kaggle.com/v1/competitions.CompetitionApiService/ListDataFiles"
        );
        assert_eq!(r.what, "Kaggle ListDataFiles");
        match &r.body {
            crate::http::Body::Json(b) => assert_eq!(
                serde_json::from_slice::<serde_json::Value>(b).expect("json"),
                serde_json::json!({"competitionName": "titanic", "pageSize": 200})
            ),
            other => panic!("{other:?}"),
        }
    }
}
