//! The Engine's streamed answers as kgenv [`Progress`]: per-layer bytes while an image is
//! pulled, and build output as lines.
//!
//! `POST /images/create` answers with one JSON object per line: a status per layer
//! (`Pulling fs layer`, `Downloading` with `progressDetail.current/total`, `Download
//! complete`, `Extracting` with bytes, `Pull complete`, `Already exists`) and a few lines
//! without a layer id (`Pulling from …`, `Digest: …`, `Status: …`). [`PullTracker`] keeps
//! each layer's numbers so every report says bytes done out of the layer's size.

use std::collections::BTreeMap;

use bollard::models::{BuildInfo, CreateImageInfo};

use crate::backends::{Progress, Stream};

/// Per-layer state of one pull.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerProgress {
    /// Compressed bytes downloaded.
    pub downloaded: u64,
    /// Compressed size, once the engine said it.
    pub size: Option<u64>,
    /// Whether the layer is in place (pulled, or already there).
    pub done: bool,
}

/// Follows one pull's events and turns them into [`Progress`] reports.
#[derive(Debug, Default)]
pub struct PullTracker {
    layers: BTreeMap<String, LayerProgress>,
}

impl PullTracker {
    /// A tracker for a new pull.
    pub fn new() -> Self {
        Self::default()
    }

    /// What to report for one event of the pull stream.
    pub fn on_event(&mut self, ev: &CreateImageInfo) -> Vec<Progress> {
        let status = ev.status.as_deref().unwrap_or_default();
        let detail = ev.progress_detail.as_ref();
        let current = detail
            .and_then(|d| d.current)
            .and_then(|v| u64::try_from(v).ok());
        let total = detail
            .and_then(|d| d.total)
            .and_then(|v| u64::try_from(v).ok())
            .filter(|t| *t > 0);
        let Some(id) = ev.id.as_deref().filter(|id| is_layer_id(id)) else {
            // `Pulling from library/busybox` (its id is the tag), `Digest: …`, `Status: …`.
            return if status.is_empty() {
                Vec::new()
            } else {
                vec![line(status.to_string())]
            };
        };
        let layer = self.layers.entry(id.to_string()).or_default();
        let item = format!("layer {id}");
        match status {
            "Downloading" => {
                if let Some(t) = total {
                    layer.size = Some(t);
                }
                layer.downloaded = current.unwrap_or(layer.downloaded).max(layer.downloaded);
                vec![Progress::Bytes {
                    item,
                    done: layer.downloaded,
                    total: layer.size,
                }]
            }
            "Verifying Checksum" | "Download complete" => {
                if let Some(size) = layer.size {
                    if layer.downloaded < size {
                        layer.downloaded = size;
                        return vec![Progress::Bytes {
                            item,
                            done: size,
                            total: Some(size),
                        }];
                    }
                }
                Vec::new()
            }
            "Extracting" => match (current, total) {
                (Some(c), Some(t)) => vec![Progress::Bytes {
                    item: format!("{item} (extract)"),
                    done: c,
                    total: Some(t),
                }],
                _ => Vec::new(),
            },
            "Pull complete" | "Already exists" => {
                layer.done = true;
                vec![line(format!("{item}: {}", status.to_ascii_lowercase()))]
            }
            _ => Vec::new(),
        }
    }

    /// Each layer seen so far, by id.
    pub fn layers(&self) -> &BTreeMap<String, LayerProgress> {
        &self.layers
    }

    /// Compressed bytes downloaded over all layers.
    pub fn downloaded(&self) -> u64 {
        self.layers.values().map(|l| l.downloaded).sum()
    }
}

/// Layer ids are 12 hex digits (or a full digest); the first line's id is the tag.
fn is_layer_id(id: &str) -> bool {
    id.len() >= 12 && id.chars().all(|c| c.is_ascii_hexdigit())
}

fn line(line: String) -> Progress {
    Progress::Line {
        stream: Stream::Stdout,
        line,
    }
}

/// Lines to report for one event of a build stream (`Step 2/3 : RUN …` and the command's
/// own output), without empty lines.
pub fn build_lines(ev: &BuildInfo) -> Vec<Progress> {
    let mut out = Vec::new();
    if let Some(s) = &ev.stream {
        out.extend(
            s.lines()
                .map(str::trim_end)
                .filter(|l| !l.is_empty())
                .map(|l| line(l.to_string())),
        );
    }
    if let Some(s) = &ev.status {
        let id = ev
            .id
            .as_deref()
            .map(|i| format!("{i}: "))
            .unwrap_or_default();
        out.push(line(format!("{id}{s}")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recorded from Docker Engine 20.10 (`POST /images/create`) pulling a three-layer image
    /// from a local `docker-registry`: two layers already present, one of 150 MB downloaded
    /// in chunks, then extracted.
    const RECORDED_PULL: &str = include_str!("../../tests/fixtures/docker/pull-events.jsonl");

    fn replay(stream: &str) -> (PullTracker, Vec<Progress>) {
        let mut t = PullTracker::new();
        let mut all = Vec::new();
        for l in stream.lines().filter(|l| !l.trim().is_empty()) {
            let ev: CreateImageInfo = serde_json::from_str(l).expect("the fixture is Engine JSON");
            all.extend(t.on_event(&ev));
        }
        (t, all)
    }

    #[test]
    fn recorded_pull_reports_bytes_per_layer() {
        let (tracker, events) = replay(RECORDED_PULL);
        let bytes: Vec<(&str, u64, Option<u64>)> = events
            .iter()
            .filter_map(|p| match p {
                Progress::Bytes { item, done, total } if !item.ends_with("(extract)") => {
                    Some((item.as_str(), *done, *total))
                }
                _ => None,
            })
            .collect();
        assert!(!bytes.is_empty(), "a download reports bytes");
        // Per layer, bytes only grow and never pass the layer's size.
        let mut last: BTreeMap<&str, u64> = BTreeMap::new();
        for (item, done, total) in &bytes {
            let prev = last.insert(item, *done).unwrap_or(0);
            assert!(*done >= prev, "{item}: {done} after {prev}");
            if let Some(t) = total {
                assert!(done <= t, "{item}: {done} > {t}");
            }
        }
        // Every downloaded layer ends at its full size.
        for (id, layer) in tracker.layers() {
            assert!(layer.done, "layer {id} finished");
            if let Some(size) = layer.size {
                assert_eq!(layer.downloaded, size, "layer {id}");
                assert_eq!(last.get(format!("layer {id}").as_str()), Some(&size));
            }
        }
        let lines: Vec<String> = events
            .iter()
            .filter_map(|p| match p {
                Progress::Line { line, .. } => Some(line.clone()),
                _ => None,
            })
            .collect();
        assert!(
            lines.iter().any(|l| l.ends_with("already exists")),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("Status: Downloaded newer image")),
            "{lines:?}"
        );
    }

    #[test]
    fn size_only_known_later_is_filled_in() {
        let mut t = PullTracker::new();
        let ev = |s: &str| serde_json::from_str::<CreateImageInfo>(s).expect("json");
        assert!(t
            .on_event(&ev(
                r#"{"status":"Pulling fs layer","progressDetail":{},"id":"0123456789ab"}"#
            ))
            .is_empty());
        let p = t.on_event(&ev(r#"{"status":"Downloading","progressDetail":{"current":10,"total":40},"id":"0123456789ab"}"#));
        assert_eq!(
            p,
            vec![Progress::Bytes {
                item: "layer 0123456789ab".into(),
                done: 10,
                total: Some(40)
            }]
        );
        let p = t.on_event(&ev(
            r#"{"status":"Download complete","progressDetail":{},"id":"0123456789ab"}"#,
        ));
        assert_eq!(
            p,
            vec![Progress::Bytes {
                item: "layer 0123456789ab".into(),
                done: 40,
                total: Some(40)
            }]
        );
        assert_eq!(t.downloaded(), 40);
    }

    #[test]
    fn build_stream_becomes_lines() {
        let ev: BuildInfo =
            serde_json::from_str(r#"{"stream":"Step 1/2 : FROM base\n ---> abc\n"}"#)
                .expect("json");
        let lines: Vec<Progress> = build_lines(&ev);
        assert_eq!(
            lines,
            vec![
                line("Step 1/2 : FROM base".into()),
                line(" ---> abc".into())
            ]
        );
    }
}
