//! Request builders for the GCS JSON API calls kgenv makes: each returns a
//! [`Request`] under the service root (Google's, or the emulator's) — no I/O here. Every
//! name is one percent-encoded path segment, so no bucket or object name can change the
//! URL's shape.

use std::collections::BTreeMap;

use bytes::Bytes;
use reqwest::header::{HeaderName, CONTENT_LENGTH, CONTENT_RANGE};
use reqwest::{Method, Url};

use super::model::{NewBucket, NewObject};
use crate::backends::BackendResult;
use crate::error::BackendError;
use crate::http::Request;

/// `base` with `segments` appended (each one path segment) and `query`.
pub(super) fn url(base: &Url, segments: &[&str], query: &[(&str, &str)]) -> BackendResult<Url> {
    let mut u = base.clone();
    {
        let mut p = u
            .path_segments_mut()
            .map_err(|_| BackendError::other("GCS base URL cannot take a path"))?;
        p.pop_if_empty();
        p.extend(segments);
    }
    if !query.is_empty() {
        u.query_pairs_mut().extend_pairs(query);
    }
    Ok(u)
}

fn bucket_what(name: &str) -> String {
    format!("bucket {name}")
}

/// `gs://bucket/name`, for messages.
pub(super) fn object_what(bucket: &str, name: &str) -> String {
    format!("gs://{bucket}/{name}")
}

/// `buckets.get`.
pub(super) fn get_bucket(base: &Url, name: &str) -> BackendResult<Request> {
    Ok(Request::new(
        Method::GET,
        url(base, &["storage", "v1", "b", name], &[])?,
        bucket_what(name),
    ))
}

/// `buckets.insert` with `body` in `project`.
pub(super) fn insert_bucket(
    base: &Url,
    project: &str,
    body: &NewBucket<'_>,
) -> BackendResult<Request> {
    Request::new(
        Method::POST,
        url(base, &["storage", "v1", "b"], &[("project", project)])?,
        bucket_what(body.name),
    )
    .json(body)
}

/// `buckets.delete`.
pub(super) fn delete_bucket(base: &Url, name: &str) -> BackendResult<Request> {
    Ok(Request::new(
        Method::DELETE,
        url(base, &["storage", "v1", "b", name], &[])?,
        bucket_what(name),
    ))
}

/// `objects.list` of every object's size, `max` to a page, from `page_token` (`None`: the
/// first page); `versions` stay false: a bucket's billed live objects.
pub(super) fn list_object_sizes(
    base: &Url,
    bucket: &str,
    max: u32,
    page_token: Option<&str>,
) -> BackendResult<Request> {
    let max = max.to_string();
    let mut query = vec![
        ("fields", "items(size),nextPageToken"),
        ("maxResults", max.as_str()),
    ];
    if let Some(t) = page_token {
        query.push(("pageToken", t));
    }
    Ok(Request::new(
        Method::GET,
        url(base, &["storage", "v1", "b", bucket, "o"], &query)?,
        bucket_what(bucket),
    ))
}

/// `objects.get` (metadata).
pub(super) fn get_object(base: &Url, bucket: &str, name: &str) -> BackendResult<Request> {
    Ok(Request::new(
        Method::GET,
        url(base, &["storage", "v1", "b", bucket, "o", name], &[])?,
        object_what(bucket, name),
    ))
}

/// `objects.get?alt=media` (content).
pub(super) fn read_object(base: &Url, bucket: &str, name: &str) -> BackendResult<Request> {
    Ok(Request::new(
        Method::GET,
        url(
            base,
            &["storage", "v1", "b", bucket, "o", name],
            &[("alt", "media")],
        )?,
        object_what(bucket, name),
    ))
}

/// `objects.delete`.
pub(super) fn delete_object(base: &Url, bucket: &str, name: &str) -> BackendResult<Request> {
    Ok(Request::new(
        Method::DELETE,
        url(base, &["storage", "v1", "b", bucket, "o", name], &[])?,
        object_what(bucket, name),
    ))
}

/// Opens a resumable upload session of `bucket/name` (`size` when known).
pub(super) fn start_upload(
    base: &Url,
    bucket: &str,
    name: &str,
    size: Option<u64>,
    metadata: &BTreeMap<String, String>,
) -> BackendResult<Request> {
    let mut req = Request::new(
        Method::POST,
        url(
            base,
            &["upload", "storage", "v1", "b", bucket, "o"],
            &[("uploadType", "resumable"), ("name", name)],
        )?,
        object_what(bucket, name),
    )
    .header(
        HeaderName::from_static("x-upload-content-type"),
        "application/octet-stream",
    )?
    .json(&NewObject { name, metadata })?;
    if let Some(n) = size {
        req = req.header(
            HeaderName::from_static("x-upload-content-length"),
            &n.to_string(),
        )?;
    }
    Ok(req)
}

/// A PUT to an upload session with this `Content-Range` and body.
pub(super) fn put_chunk(
    session: &Url,
    what: &str,
    range: &str,
    body: Bytes,
) -> BackendResult<Request> {
    Ok(Request::new(Method::PUT, session.clone(), what)
        .header(CONTENT_RANGE, range)?
        .bytes(body))
}

/// An empty PUT to an upload session with this `Content-Range` (a status query).
pub(super) fn put_empty(session: &Url, what: &str, range: &str) -> BackendResult<Request> {
    Request::new(Method::PUT, session.clone(), what)
        .header(CONTENT_RANGE, range)?
        .header(CONTENT_LENGTH, "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_one_segment() {
        let base: Url = "http://127.0.0.1:4443".parse().expect("url");
        let r = get_object(&base, "bk", "comp/a b?.csv").expect("request");
        assert_eq!(
            r.url.as_str(),
            "http://127.0.0.1:4443/storage/v1/b/bk/o/comp%2Fa%20b%3F.csv"
        );
        assert_eq!(r.what, "gs://bk/comp/a b?.csv");
        let r = insert_bucket(
            &base,
            "my-project",
            &NewBucket::uniform("kgenv-data", "us-central1"),
        )
        .expect("request");
        assert_eq!(
            r.url.as_str(),
            "http://127.0.0.1:4443/storage/v1/b?project=my-project"
        );
        assert_eq!(r.what, "bucket kgenv-data");
    }
}
